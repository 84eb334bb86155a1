//! The WASI preview1 functions the proxy-wasm spec lets a module import:
//! `fd_write` to stdout and stderr goes to the filter's log; clocks and
//! `random_get` work; the environment and arguments are empty; there are no
//! files (no preopened directories); `proc_exit` ends the call as a trap.
//! Any other `wasi_snapshot_preview1` function answers `ENOSYS`.

use std::time::{SystemTime, UNIX_EPOCH};

use wasmtime::{Caller, ExternType, Linker, Module, Val};

use super::imports::message_line;
use super::state::{VmState, read, trap, write, write_u32, write_u64};

pub const MODULE: &str = "wasi_snapshot_preview1";

const SUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EINVAL: i32 = 28;
const ENOSYS: i32 = 52;

/// The functions served for real (or as "no such file").
pub const PROVIDED: [&str; 17] = [
    "fd_write",
    "fd_read",
    "fd_close",
    "fd_seek",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_fdstat_get",
    "environ_sizes_get",
    "environ_get",
    "args_sizes_get",
    "args_get",
    "clock_time_get",
    "clock_res_get",
    "random_get",
    "sched_yield",
    "proc_exit",
    "poll_oneoff",
];

type C<'a> = Caller<'a, VmState>;
type R = wasmtime::Result<i32>;

/// Adds the functions to `linker`, and answers `ENOSYS` for any other WASI
/// function `module` imports.
pub fn add_to_linker(linker: &mut Linker<VmState>, module: &Module) -> wasmtime::Result<()> {
    linker.func_wrap(MODULE, "fd_write", fd_write)?;
    linker.func_wrap(
        MODULE,
        "fd_read",
        |_: C<'_>, _: i32, _: i32, _: i32, _: i32| -> R { Ok(EBADF) },
    )?;
    linker.func_wrap(MODULE, "fd_close", |_: C<'_>, _: i32| -> R { Ok(EBADF) })?;
    linker.func_wrap(
        MODULE,
        "fd_seek",
        |_: C<'_>, _: i32, _: i64, _: i32, _: i32| -> R { Ok(EBADF) },
    )?;
    linker.func_wrap(MODULE, "fd_prestat_get", |_: C<'_>, _: i32, _: i32| -> R {
        Ok(EBADF)
    })?;
    linker.func_wrap(
        MODULE,
        "fd_prestat_dir_name",
        |_: C<'_>, _: i32, _: i32, _: i32| -> R { Ok(EBADF) },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_fdstat_get",
        |mut c: C<'_>, fd: i32, at: i32| -> R {
            if !(0..=2).contains(&fd) {
                return Ok(EBADF);
            }
            // A character device with no rights to speak of.
            let mut stat = [0u8; 24];
            stat[0] = 2;
            write(&mut c, at, &stat)?;
            Ok(SUCCESS)
        },
    )?;
    for (sizes, values) in [
        ("environ_sizes_get", "environ_get"),
        ("args_sizes_get", "args_get"),
    ] {
        linker.func_wrap(MODULE, sizes, |mut c: C<'_>, count: i32, size: i32| -> R {
            write_u32(&mut c, count, 0)?;
            write_u32(&mut c, size, 0)?;
            Ok(SUCCESS)
        })?;
        linker.func_wrap(MODULE, values, |_: C<'_>, _: i32, _: i32| -> R {
            Ok(SUCCESS)
        })?;
    }
    linker.func_wrap(
        MODULE,
        "clock_time_get",
        |mut c: C<'_>, id: i32, _precision: i64, at: i32| -> R {
            let nanos = match id {
                0 => SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64),
                1 => c.data().identity.epoch.elapsed().as_nanos() as u64,
                _ => return Ok(EINVAL),
            };
            write_u64(&mut c, at, nanos)?;
            Ok(SUCCESS)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "clock_res_get",
        |mut c: C<'_>, _id: i32, at: i32| -> R {
            write_u64(&mut c, at, 1)?;
            Ok(SUCCESS)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "random_get",
        |mut c: C<'_>, at: i32, len: i32| -> R {
            let mut bytes = vec![0u8; len as u32 as usize];
            fastrand::fill(&mut bytes);
            write(&mut c, at, &bytes)?;
            Ok(SUCCESS)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "poll_oneoff",
        |_: C<'_>, _: i32, _: i32, _: i32, _: i32| -> R { Ok(ENOSYS) },
    )?;
    linker.func_wrap(MODULE, "sched_yield", |_: C<'_>| -> R { Ok(SUCCESS) })?;
    linker.func_wrap(
        MODULE,
        "proc_exit",
        |_: C<'_>, code: i32| -> wasmtime::Result<()> {
            Err(trap(format!("the filter called proc_exit({code})")))
        },
    )?;
    // Anything else: not supported, said the WASI way.
    for import in module.imports().filter(|i| i.module() == MODULE) {
        if let ExternType::Func(ty) = import.ty()
            && !PROVIDED.contains(&import.name())
        {
            let returns_errno = ty.results().len() == 1;
            linker.func_new(MODULE, import.name(), ty, move |_, _, results| {
                if returns_errno {
                    results[0] = Val::I32(ENOSYS);
                }
                Ok(())
            })?;
        }
    }
    Ok(())
}

fn fd_write(mut c: C<'_>, fd: i32, iovs: i32, count: i32, written: i32) -> R {
    if fd != 1 && fd != 2 {
        return Ok(EBADF);
    }
    let mut text = Vec::new();
    for k in 0..count.clamp(0, 1024) {
        let iov = read(&c, iovs + 8 * k, 8)?;
        let ptr = i32::from_le_bytes(iov[..4].try_into().expect("4 bytes"));
        let len = i32::from_le_bytes(iov[4..].try_into().expect("4 bytes"));
        text.extend(read(&c, ptr, len)?);
    }
    let level = if fd == 1 {
        tracing::Level::INFO
    } else {
        tracing::Level::WARN
    };
    let line = String::from_utf8_lossy(&text);
    let line = line.trim_end_matches('\n');
    if !line.is_empty() {
        message_line(c.data(), level, line);
    }
    write_u32(&mut c, written, text.len() as u32)?;
    Ok(SUCCESS)
}
