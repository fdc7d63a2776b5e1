//! `--push URL`: the run's metrics to a Prometheus Pushgateway, once, at the end.
//!
//! One `PUT {URL}/metrics/job/<job>/instance/<host>` (PUT: the group holds this run's
//! metrics only) in the Prometheus text format, over a plain HTTP/1.1 connection written
//! here on `std::net::TcpStream`: name resolution, connecting, sending and the answer
//! together take at most [`PUSH_TIMEOUT`]. A request this small needs no HTTP crate;
//! what joulerun needs from one (a deadline on every step, no TLS stack) is these lines.
//! HTTPS is not supported (put a TLS-terminating proxy in front, or push over a trusted
//! network); `http://user:password@host` sends basic authentication.
//!
//! A failure is returned as a message that the run prints as a warning: it never loses
//! the report nor changes joulerun's exit status.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Everything a push may take, from resolving the host to reading the answer.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Most of an answer read (the status line and the start of an error message).
const MAX_ANSWER: usize = 16 * 1024;

/// Where to push: a Pushgateway's address, checked when the run is planned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushTarget {
    /// As given, without credentials, for messages.
    pub shown: String,
    pub host: String,
    pub port: u16,
    /// Path before `/metrics` (a Pushgateway behind a prefix), without a final slash.
    pub prefix: String,
    /// `user:password`, sent as basic authentication.
    pub userinfo: Option<String>,
}

impl PushTarget {
    /// `http://HOST[:PORT][/PREFIX]`; errors are usage errors naming `--push`.
    pub fn parse(url: &str) -> Result<PushTarget> {
        let bad = |why: &str| {
            Error::usage(format!(
                "invalid --push URL '{}': {why}",
                crate::text::escape_line(url)
            ))
        };
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
                return Err(bad(
                    "https is not supported; give the Pushgateway's http:// address (behind a TLS proxy, its plain side)",
                ));
            }
            _ => return Err(bad("give http://HOST:PORT, e.g. http://localhost:9091")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if path.contains(['?', '#']) {
            return Err(bad(
                "no query or fragment: the job and instance are added to the path",
            ));
        }
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, authority),
        };
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            // [v6]:port
            let (h, after) = h.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            (h.to_string(), after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        let port = match port {
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?,
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("no host"));
        }
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("the path has spaces or control characters"));
        }
        let shown_authority = match &userinfo {
            Some(_) => format!("***@{hostport}"),
            None => hostport.to_string(),
        };
        Ok(PushTarget {
            shown: format!("http://{shown_authority}{path}"),
            host,
            port,
            prefix: path.trim_end_matches('/').to_string(),
            userinfo,
        })
    }

    /// The path of a group: `{prefix}/metrics/job/<job>/instance/<instance>`; a value
    /// with characters outside `[A-Za-z0-9_.:-]` goes as `label@base64/<base64url>`, as
    /// the Pushgateway documents.
    pub fn group_path(&self, job: &str, instance: &str) -> String {
        let part = |label: &str, v: &str| {
            if !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c))
            {
                format!("/{label}/{v}")
            } else {
                format!("/{label}@base64/{}", base64(v.as_bytes(), true))
            }
        };
        format!(
            "{}/metrics{}{}",
            self.prefix,
            part("job", job),
            part("instance", instance)
        )
    }
}

/// Base64 (RFC 4648), standard or URL-safe alphabet; padded (the Pushgateway accepts
/// both; `=` for an empty value).
fn base64(b: &[u8], url: bool) -> String {
    let abc: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    if b.is_empty() {
        return "=".to_string();
    }
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(abc[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Resolve `host:port` in a thread, waiting at most until `deadline`: a resolver that
/// hangs never holds joulerun past it.
fn resolve(
    host: &str,
    port: u16,
    deadline: Instant,
) -> std::result::Result<Vec<SocketAddr>, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = host.to_string();
    std::thread::spawn(move || {
        let _ = tx.send(
            (h.as_str(), port)
                .to_socket_addrs()
                .map(|a| a.collect::<Vec<_>>()),
        );
    });
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(Ok(a)) if !a.is_empty() => Ok(a),
        Ok(Ok(_)) => Err(format!("'{host}' has no address")),
        Ok(Err(e)) => Err(format!("cannot resolve '{host}': {e}")),
        Err(_) => Err(format!("resolving '{host}' took too long")),
    }
}

/// Push `body` (Prometheus text format) to the group of `job` and `instance`. Returns
/// why it failed.
pub fn push(
    t: &PushTarget,
    job: &str,
    instance: &str,
    body: &[u8],
) -> std::result::Result<(), String> {
    push_within(t, job, instance, body, PUSH_TIMEOUT)
}

/// [`push`] with its own time limit (tests).
pub fn push_within(
    t: &PushTarget,
    job: &str,
    instance: &str,
    body: &[u8],
    limit: Duration,
) -> std::result::Result<(), String> {
    let deadline = Instant::now() + limit;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let timed_out = |e: std::io::Error, what: &str| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            format!("no answer within {} s while {what}", limit.as_secs_f64())
        } else {
            format!("{what}: {e}")
        }
    };
    let addrs = resolve(&t.host, t.port, deadline)?;
    let mut stream = None;
    let mut last = String::new();
    for a in addrs {
        match TcpStream::connect_timeout(&a, left()) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = timed_out(e, &format!("connecting to {a}")),
        }
    }
    let mut s = stream.ok_or(last)?;
    let path = t.group_path(job, instance);
    let host = if t.host.contains(':') {
        format!("[{}]:{}", t.host, t.port)
    } else {
        format!("{}:{}", t.host, t.port)
    };
    let mut req = format!(
        "PUT {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: joulerun/{}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    if let Some(u) = &t.userinfo {
        req.push_str(&format!(
            "Authorization: Basic {}\r\n",
            base64(u.as_bytes(), false)
        ));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    s.set_write_timeout(Some(left()))
        .and_then(|_| s.write_all(&bytes))
        .map_err(|e| timed_out(e, "sending"))?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        s.set_read_timeout(Some(left()))
            .map_err(|e| format!("reading the answer: {e}"))?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.len() >= MAX_ANSWER {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // An answer already complete enough to judge is enough.
                if status_of(&answer).is_some() && Instant::now() >= deadline {
                    break;
                }
                return Err(timed_out(e, "waiting for the answer"));
            }
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    match status_of(&answer) {
        Some(code) if (200..300).contains(&code) => Ok(()),
        Some(code) => {
            let text = String::from_utf8_lossy(&answer);
            let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).trim();
            let body = crate::text::elide_middle(&crate::text::escape_line(body), 300).into_owned();
            Err(format!(
                "the Pushgateway answered {code}{}",
                if body.is_empty() {
                    String::new()
                } else {
                    format!(": {body}")
                }
            ))
        }
        None => Err("the answer was not HTTP".to_string()),
    }
}

/// The status code of an HTTP/1.x answer.
fn status_of(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn urls_are_checked_when_the_run_is_planned() {
        let t = PushTarget::parse("http://gw.example:9091").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.prefix.as_str()),
            ("gw.example", 9091, "")
        );
        assert_eq!(
            t.group_path("joulerun", "node-1"),
            "/metrics/job/joulerun/instance/node-1"
        );
        let t = PushTarget::parse("HTTP://u:p@[::1]:9/prom/").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.prefix.as_str()),
            ("::1", 9, "/prom")
        );
        assert_eq!(t.userinfo.as_deref(), Some("u:p"));
        assert_eq!(t.shown, "http://***@[::1]:9/prom/");
        assert_eq!(PushTarget::parse("http://h").unwrap().port, 80);
        for (u, needle) in [
            ("https://h:1", "https is not supported"),
            ("h:9091", "give http://"),
            ("http://h:0", "port"),
            ("http://h:99999", "port"),
            ("http://:9091", "no host"),
            ("http://h/x?y", "no query"),
        ] {
            let e = PushTarget::parse(u).unwrap_err();
            assert_eq!(e.code, 2);
            assert!(
                e.message.contains(needle) && e.message.contains("--push"),
                "{u}: {}",
                e.message
            );
        }
        // Values a path cannot hold go base64-encoded.
        let t = PushTarget::parse("http://h:1").unwrap();
        assert_eq!(
            t.group_path("a/b", ""),
            "/metrics/job@base64/YS9i/instance@base64/="
        );
        assert_eq!(base64(b"user:pass", false), "dXNlcjpwYXNz");
        assert_eq!(base64(b"ab", true), "YWI=");
    }

    /// A server on 127.0.0.1 that answers each connection with `answer` after `delay`.
    fn server(answer: &'static [u8], delay: Duration) -> (u16, std::thread::JoinHandle<Vec<u8>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            c.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                if got.ends_with(b"# EOF\n") {
                    break;
                }
            }
            std::thread::sleep(delay);
            let _ = c.write_all(answer);
            got
        });
        (port, h)
    }

    #[test]
    fn a_put_with_the_body_and_the_answer_judged() {
        let (port, h) = server(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            Duration::ZERO,
        );
        let t = PushTarget::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        push(&t, "j", "host-1", b"x 1\n# EOF\n").unwrap();
        let req = String::from_utf8(h.join().unwrap()).unwrap();
        assert!(
            req.starts_with("PUT /metrics/job/j/instance/host-1 HTTP/1.1\r\n"),
            "{req}"
        );
        assert!(
            req.contains("Content-Length: 10\r\n") && req.ends_with("\r\n\r\nx 1\n# EOF\n"),
            "{req}"
        );

        let (port, h) = server(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 12\r\n\r\nbad\x1b[2Jinput",
            Duration::ZERO,
        );
        let t = PushTarget::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let e = push(&t, "j", "h", b"x 1\n# EOF\n").unwrap_err();
        h.join().unwrap();
        assert_eq!(e, "the Pushgateway answered 400: bad\\x1b[2Jinput");
    }

    #[test]
    fn a_silent_server_or_a_closed_port_fails_in_time() {
        let (port, h) = server(b"", Duration::from_millis(1500));
        let t = PushTarget::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let t0 = Instant::now();
        let e = push_within(&t, "j", "h", b"x 1\n# EOF\n", Duration::from_millis(300)).unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        assert!(e.contains("no answer within 0.3 s"), "{e}");
        h.join().unwrap();
        // Nothing listens on a port just released.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let t = PushTarget::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let e = push(&t, "j", "h", b"").unwrap_err();
        assert!(e.contains("connecting to 127.0.0.1"), "{e}");
    }
}
