//! Reading one HTTP/1.1 response off a keep-alive connection: the head, then
//! a `content-length` or chunked body.

use std::io::{self, Read};

/// Heads longer than this are refused.
const MAX_HEAD: usize = 64 * 1024;

/// One response, read whole.
#[derive(Debug, PartialEq)]
pub struct Answer {
    pub status: u16,
    /// Head and body bytes.
    pub bytes: usize,
    /// The server closes the connection after it.
    pub close: bool,
}

#[derive(Debug)]
pub enum ReadError {
    /// No byte within the read timeout.
    Timeout,
    Io(io::Error),
    Malformed(&'static str),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Timeout => f.write_str("no answer within the timeout"),
            ReadError::Io(e) => write!(f, "reading the response: {e}"),
            ReadError::Malformed(what) => write!(f, "malformed response: {what}"),
        }
    }
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> ReadError {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ReadError::Timeout,
            _ => ReadError::Io(e),
        }
    }
}

/// Reads one response from `conn`. `buffer` is scratch space, kept between
/// calls for its allocation; nothing is pipelined, so no bytes carry over.
pub fn read_response(conn: &mut impl Read, buffer: &mut Vec<u8>) -> Result<Answer, ReadError> {
    buffer.clear();
    let head_end = loop {
        if let Some(at) = find(buffer, b"\r\n\r\n") {
            break at + 4;
        }
        if buffer.len() > MAX_HEAD {
            return Err(ReadError::Malformed("response head too long"));
        }
        fill(conn, buffer)?;
    };
    let head = std::str::from_utf8(&buffer[..head_end])
        .map_err(|_| ReadError::Malformed("response head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.strip_prefix("HTTP/1.1 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or(ReadError::Malformed("no HTTP/1.1 status line"))?;
    let (mut length, mut chunked, mut close) = (None, false, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| ReadError::Malformed("bad content-length"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let end = if chunked {
        chunked_end(conn, buffer, head_end)?
    } else {
        let end = head_end + length.unwrap_or(0);
        while buffer.len() < end {
            fill(conn, buffer)?;
        }
        end
    };
    if buffer.len() != end {
        return Err(ReadError::Malformed("bytes after the response"));
    }
    Ok(Answer {
        status,
        bytes: end,
        close,
    })
}

/// Where a chunked body that starts at `at` ends (after its last chunk and
/// trailers), reading as needed.
fn chunked_end(
    conn: &mut impl Read,
    buffer: &mut Vec<u8>,
    mut at: usize,
) -> Result<usize, ReadError> {
    loop {
        let line_end = loop {
            if let Some(i) = find(&buffer[at..], b"\r\n") {
                break at + i;
            }
            fill(conn, buffer)?;
        };
        let size_text = std::str::from_utf8(&buffer[at..line_end])
            .map_err(|_| ReadError::Malformed("bad chunk size"))?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| ReadError::Malformed("bad chunk size"))?;
        if size == 0 {
            // Trailers (none expected), then the empty line.
            loop {
                if let Some(i) = find(&buffer[line_end..], b"\r\n\r\n") {
                    return Ok(line_end + i + 4);
                }
                fill(conn, buffer)?;
            }
        }
        at = line_end + 2 + size + 2;
        while buffer.len() < at {
            fill(conn, buffer)?;
        }
    }
}

/// Appends what one read gives; the end of the stream is an error here.
fn fill(conn: &mut impl Read, buffer: &mut Vec<u8>) -> Result<(), ReadError> {
    let mut chunk = [0u8; 8192];
    let n = conn.read(&mut chunk)?;
    if n == 0 {
        return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    buffer.extend_from_slice(&chunk[..n]);
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gives its bytes a few at a time, as a socket may.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(out.len()).min(7);
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn read(bytes: &[u8]) -> Result<Answer, ReadError> {
        read_response(&mut Trickle(bytes), &mut Vec::new())
    }

    #[test]
    fn a_content_length_response() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{\"ok\":true}\n";
        assert_eq!(
            read(raw).unwrap(),
            Answer {
                status: 200,
                bytes: raw.len(),
                close: false
            }
        );
    }

    #[test]
    fn a_chunked_response_that_closes() {
        let raw = b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n1;x=y\r\n!\r\n0\r\n\r\n";
        assert_eq!(
            read(raw).unwrap(),
            Answer {
                status: 404,
                bytes: raw.len(),
                close: true
            }
        );
    }

    #[test]
    fn truncated_and_malformed_responses_are_errors() {
        assert!(matches!(
            read(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab"),
            Err(ReadError::Io(_))
        ));
        assert!(matches!(
            read(b"HTTP/1.0 200 OK\r\n\r\n"),
            Err(ReadError::Malformed("no HTTP/1.1 status line"))
        ));
        assert!(matches!(
            read(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n"),
            Err(ReadError::Malformed("bad content-length"))
        ));
    }
}
