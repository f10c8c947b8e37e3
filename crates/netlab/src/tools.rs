//! What `netlab-tool` does inside lab hosts: TCP transfers checked by SHA-256, junk UDP senders.

use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// The line both ends of a transfer print: `bytes=N sha256=HEX`.
pub fn summary(bytes: u64, hash: &[u8]) -> String {
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("bytes={bytes} sha256={hex}")
}

/// Accepts one TCP connection on `listen`, reads it to the end and returns its summary.
/// Gives up if nobody connects within `timeout`.
pub fn serve(listen: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    let listener = TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    let mut stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "nobody connected",
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok(summary(total, &hasher.finalize()))
}

/// Connects to `dst` (retrying for up to `timeout`), sends `bytes` pseudo-random bytes from `seed`,
/// and returns the summary of what it sent.
pub fn send(dst: SocketAddr, bytes: u64, seed: u64, timeout: Duration) -> std::io::Result<String> {
    let deadline = Instant::now() + timeout;
    let mut stream = loop {
        match TcpStream::connect_timeout(&dst, Duration::from_secs(2)) {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        hasher.update(&buf[..n]);
        stream.write_all(&buf[..n])?;
        left -= n as u64;
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    // Wait for the receiver to close, so that the whole stream was delivered.
    let mut sink = [0u8; 64];
    while stream.read(&mut sink)? > 0 {}
    Ok(summary(bytes, &hasher.finalize()))
}

/// Sends `count` malformed datagrams to `dst`: random bytes of random lengths, and WireGuard
/// message headers (types 1–4) truncated or filled with garbage. Returns how many were sent.
pub fn junk(dst: SocketAddr, count: u32, seed: u64) -> std::io::Result<u32> {
    let bind: SocketAddr = if dst.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind)?;
    let mut rng = SmallRng::seed_from_u64(seed);
    // Full sizes of the four WireGuard messages (data: header + tag + some payload).
    let sizes = [148usize, 92, 64, 32 + 64];
    let mut sent = 0;
    for i in 0..count {
        let msg: Vec<u8> = match i % 3 {
            0 => {
                let len = rng.gen_range(0..1500);
                (0..len).map(|_| rng.gen()).collect()
            }
            1 => {
                let ty = rng.gen_range(1..=4u8);
                let full = sizes[usize::from(ty - 1)];
                let len = rng.gen_range(1..full);
                let mut m: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                m[0] = ty;
                for b in m.iter_mut().take(4).skip(1) {
                    *b = 0;
                }
                m
            }
            _ => {
                let ty = rng.gen_range(1..=4u8);
                let mut m: Vec<u8> = (0..sizes[usize::from(ty - 1)]).map(|_| rng.gen()).collect();
                m[0] = ty;
                m[1..4].fill(0);
                m
            }
        };
        socket.send_to(&msg, dst)?;
        sent += 1;
        if i % 64 == 63 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(sent)
}

/// A DNS query for `name` (type A, recursion desired) with `id`, built by hand so the lab's
/// measuring tool shares no code with the server it measures.
pub fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len().min(63) as u8);
        q.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// What `dns_latency` measured: each answered query's round trip, and how many got none.
pub struct DnsLatency {
    pub rtts: Vec<Duration>,
    pub lost: u32,
    /// Answers that were not NOERROR with at least one record.
    pub bad: u32,
}

/// Asks `server` for `name` `count` times, one query at a time (the next once the last is
/// answered, or after a second without an answer), timing each round trip.
pub fn dns_latency(server: SocketAddr, name: &str, count: u32) -> std::io::Result<DnsLatency> {
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind)?;
    sock.connect(server)?;
    sock.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut out = DnsLatency {
        rtts: Vec::with_capacity(count as usize),
        lost: 0,
        bad: 0,
    };
    let mut buf = [0u8; 1500];
    for i in 0..count {
        let id = (i % 65_536) as u16;
        let q = dns_query(id, name);
        let sent = Instant::now();
        sock.send(&q)?;
        loop {
            match sock.recv(&mut buf) {
                Ok(n) if n >= 12 && buf[..2] == id.to_be_bytes() => {
                    out.rtts.push(sent.elapsed());
                    let rcode = buf[3] & 0x0f;
                    let answers = u16::from_be_bytes([buf[6], buf[7]]);
                    if rcode != 0 || answers == 0 {
                        out.bad += 1;
                    }
                    break;
                }
                // A late answer to an earlier query: not this one.
                Ok(_) => continue,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    out.lost += 1;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(out)
}

/// Accepts TCP connections on every address in `listen` for `duration`; each is greeted with
/// `hello from PORT\n` and closed. Prints `listening` once every socket is bound.
pub fn greet(listen: &[SocketAddr], duration: Duration) -> std::io::Result<()> {
    let listeners = listen
        .iter()
        .map(TcpListener::bind)
        .collect::<std::io::Result<Vec<_>>>()?;
    println!("listening");
    let deadline = Instant::now() + duration;
    for l in &listeners {
        l.set_nonblocking(true)?;
    }
    while Instant::now() < deadline {
        let mut idle = true;
        for l in &listeners {
            if let Ok((mut s, _)) = l.accept() {
                idle = false;
                let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
                let _ = s.set_nonblocking(false);
                let _ = writeln!(s, "hello from {port}");
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    Ok(())
}

/// A plain HTTP server on `listen` for `duration`: every request is answered `200` with
/// `you are IP` (the source address it came from), and `request from IP` printed, so a test
/// can tell which address reached the host (a router's masquerade, an exit node's).
pub fn http(listen: SocketAddr, duration: Duration) -> std::io::Result<()> {
    let l = TcpListener::bind(listen)?;
    l.set_nonblocking(true)?;
    println!("listening");
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        let Ok((mut s, from)) = l.accept() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let _ = s.set_nonblocking(false);
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16 * 1024 {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
        }
        let ip = from.ip().to_canonical();
        println!("request from {ip}");
        let body = format!("you are {ip}\n");
        let _ = write!(
            s,
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
    Ok(())
}

/// `GET /` from the HTTP server at `dst` within `timeout`: the body (`you are IP`), or what
/// went wrong.
pub fn http_get(dst: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&dst, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(s, "GET / HTTP/1.0\r\nHost: {dst}\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    match resp.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.0 200") => Ok(body.trim().to_string()),
        _ => Err(std::io::Error::other(format!("not an answer: {resp:?}"))),
    }
}

/// One TCP connection attempt to `dst` within `timeout`: `connected` (the greeting was read),
/// `refused`, or `timeout` (what a dropped SYN looks like).
pub fn probe(dst: SocketAddr, timeout: Duration) -> &'static str {
    match TcpStream::connect_timeout(&dst, timeout) {
        Ok(mut s) => {
            let _ = s.set_read_timeout(Some(timeout));
            let mut buf = [0u8; 64];
            match s.read(&mut buf) {
                Ok(n) if n > 0 => "connected",
                _ => "timeout",
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => "refused",
        Err(_) => "timeout",
    }
}
