//! The `request` and `response` interfaces: lazy accessors over the
//! exchange moved into the store for the call. Each accessor copies only
//! what it returns; setters validate and trap on invalid HTTP.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use wasmtime::format_err;

use super::bindings::weft::filter::{request, response, types};
use super::exchange::{Phase, authority_of, first_header, lossy, path_of};
use super::host::HostState;
use crate::http::headers;

impl HostState {
    fn request_mut(&mut self, what: &str) -> wasmtime::Result<&mut http::request::Parts> {
        let phase = self.exchange.phase;
        if !phase.request_writable() {
            return Err(format_err!(
                "request.{what} called in {}: the request is read-only in response phases",
                phase.name()
            ));
        }
        self.request(what)
    }

    /// The call's request; `what` names the function for the error.
    fn request(&mut self, what: &str) -> wasmtime::Result<&mut http::request::Parts> {
        self.exchange.request.as_mut().ok_or_else(|| {
            format_err!("request.{what} called outside a phase: there is no request in init")
        })
    }

    /// The call's response; `what` names the function for the error.
    fn response(&mut self, what: &str) -> wasmtime::Result<&mut http::response::Parts> {
        let phase = self.exchange.phase;
        match self.exchange.response.as_mut() {
            Some(response) => Ok(response),
            None if self.exchange.request.is_none() => Err(format_err!(
                "response.{what} called outside a phase: there is no response in init"
            )),
            None => Err(format_err!(
                "response.{what} called in {}: there is no response before the response phases",
                phase.name()
            )),
        }
    }

    fn response_mut(&mut self, what: &str) -> wasmtime::Result<&mut http::response::Parts> {
        if self.exchange.phase == Phase::Done {
            return Err(format_err!(
                "response.{what} called in on-done: the response is already sent"
            ));
        }
        self.response(what)
    }
}

// ---- header access shared by request and response ----

fn header_all(map: &HeaderMap, name: &str) -> Vec<String> {
    map.get_all(name)
        .iter()
        .map(|v| lossy(v).into_owned())
        .collect()
}

fn header_names(map: &HeaderMap) -> Vec<String> {
    map.keys().map(|k| k.as_str().to_string()).collect()
}

/// Refuses the names the proxy manages (`content-length` and the hop-by-hop
/// headers): they frame the message on each connection.
fn refuse_managed(what: &str, name: &HeaderName) -> wasmtime::Result<()> {
    if headers::is_managed(name) {
        return Err(format_err!(
            "{what}: {:?} is managed by the proxy, which frames the message \
             (set-body sets content-length)",
            name.as_str()
        ));
    }
    Ok(())
}

fn parse_header(
    what: &str,
    name: &str,
    value: &str,
) -> wasmtime::Result<(HeaderName, HeaderValue)> {
    let n = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format_err!("{what}: invalid header name {name:?}"))?;
    refuse_managed(what, &n)?;
    let v = HeaderValue::from_str(value)
        .map_err(|_| format_err!("{what}: invalid value for header {name:?}: {value:?}"))?;
    Ok((n, v))
}

fn set_header(what: &str, map: &mut HeaderMap, name: &str, value: &str) -> wasmtime::Result<()> {
    let (n, v) = parse_header(what, name, value)?;
    map.insert(n, v);
    Ok(())
}

fn append_header(what: &str, map: &mut HeaderMap, name: &str, value: &str) -> wasmtime::Result<()> {
    let (n, v) = parse_header(what, name, value)?;
    map.append(n, v);
    Ok(())
}

fn remove_header(what: &str, map: &mut HeaderMap, name: &str) -> wasmtime::Result<()> {
    // An invalid name cannot be present: nothing to remove.
    if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
        refuse_managed(what, &n)?;
        map.remove(n);
    }
    Ok(())
}

fn set_content_length(map: &mut HeaderMap, len: usize) {
    map.remove(http::header::TRANSFER_ENCODING);
    map.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
}

impl types::Host for HostState {}

impl request::Host for HostState {
    fn method(&mut self) -> wasmtime::Result<String> {
        Ok(self.request("method")?.method.as_str().to_string())
    }

    fn path(&mut self) -> wasmtime::Result<String> {
        Ok(path_of(self.request("path")?).to_string())
    }

    fn set_path(&mut self, path: String) -> wasmtime::Result<()> {
        let req = self.request_mut("set-path")?;
        if !path.starts_with('/') {
            return Err(format_err!("set-path: {path:?} does not start with '/'"));
        }
        let pq: http::uri::PathAndQuery = path
            .parse()
            .map_err(|_| format_err!("set-path: {path:?} is not a valid path"))?;
        let mut parts = std::mem::take(&mut req.uri).into_parts();
        parts.path_and_query = Some(pq);
        req.uri = http::Uri::from_parts(parts).map_err(|e| format_err!("set-path: {e}"))?;
        Ok(())
    }

    fn authority(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(authority_of(self.request("authority")?).map(Cow::into_owned))
    }

    fn header(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(first_header(&self.request("header")?.headers, &name).map(Cow::into_owned))
    }

    fn header_all(&mut self, name: String) -> wasmtime::Result<Vec<String>> {
        Ok(header_all(&self.request("header-all")?.headers, &name))
    }

    fn header_names(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(header_names(&self.request("header-names")?.headers))
    }

    fn set_header(&mut self, name: String, value: String) -> wasmtime::Result<()> {
        set_header(
            "request.set-header",
            &mut self.request_mut("set-header")?.headers,
            &name,
            &value,
        )
    }

    fn append_header(&mut self, name: String, value: String) -> wasmtime::Result<()> {
        append_header(
            "request.append-header",
            &mut self.request_mut("append-header")?.headers,
            &name,
            &value,
        )
    }

    fn remove_header(&mut self, name: String) -> wasmtime::Result<()> {
        remove_header(
            "request.remove-header",
            &mut self.request_mut("remove-header")?.headers,
            &name,
        )
    }

    fn body(&mut self) -> wasmtime::Result<Option<Vec<u8>>> {
        self.request("body")?;
        Ok(self.exchange.request_body.as_ref().map(|b| b.to_vec()))
    }

    fn set_body(&mut self, body: Vec<u8>) -> wasmtime::Result<()> {
        // Outside a phase (in init) that is the error to report.
        self.request("set-body")?;
        if self.exchange.phase != Phase::RequestBody {
            return Err(format_err!(
                "request.set-body called in {}: only allowed in on-request-body",
                self.exchange.phase.name()
            ));
        }
        set_content_length(&mut self.request("set-body")?.headers, body.len());
        self.exchange.request_body = Some(Bytes::from(body));
        Ok(())
    }

    fn set_timeout_ms(&mut self, ms: u32) -> wasmtime::Result<()> {
        self.request_mut("set-timeout-ms")?;
        if ms == 0 {
            return Err(format_err!(
                "set-timeout-ms: the timeout must be at least 1 ms"
            ));
        }
        self.exchange.upstream_timeout = Some(std::time::Duration::from_millis(ms.into()));
        Ok(())
    }
}

impl response::Host for HostState {
    fn status(&mut self) -> wasmtime::Result<u16> {
        Ok(self.response("status")?.status.as_u16())
    }

    fn set_status(&mut self, status: u16) -> wasmtime::Result<()> {
        let resp = self.response_mut("set-status")?;
        resp.status = http::StatusCode::from_u16(status)
            .map_err(|_| format_err!("set-status: {status} is not a valid status code"))?;
        Ok(())
    }

    fn header(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(first_header(&self.response("header")?.headers, &name).map(Cow::into_owned))
    }

    fn header_all(&mut self, name: String) -> wasmtime::Result<Vec<String>> {
        Ok(header_all(&self.response("header-all")?.headers, &name))
    }

    fn header_names(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(header_names(&self.response("header-names")?.headers))
    }

    fn set_header(&mut self, name: String, value: String) -> wasmtime::Result<()> {
        set_header(
            "response.set-header",
            &mut self.response_mut("set-header")?.headers,
            &name,
            &value,
        )
    }

    fn append_header(&mut self, name: String, value: String) -> wasmtime::Result<()> {
        append_header(
            "response.append-header",
            &mut self.response_mut("append-header")?.headers,
            &name,
            &value,
        )
    }

    fn remove_header(&mut self, name: String) -> wasmtime::Result<()> {
        remove_header(
            "response.remove-header",
            &mut self.response_mut("remove-header")?.headers,
            &name,
        )
    }

    fn body(&mut self) -> wasmtime::Result<Option<Vec<u8>>> {
        self.response("body")?;
        Ok(self.exchange.response_body.as_ref().map(|b| b.to_vec()))
    }

    fn set_body(&mut self, body: Vec<u8>) -> wasmtime::Result<()> {
        // Outside a phase (in init) that is the error to report.
        self.response("set-body")?;
        if self.exchange.phase != Phase::ResponseBody {
            return Err(format_err!(
                "response.set-body called in {}: only allowed in on-response-body",
                self.exchange.phase.name()
            ));
        }
        set_content_length(&mut self.response("set-body")?.headers, body.len());
        self.exchange.response_body = Some(Bytes::from(body));
        Ok(())
    }
}
