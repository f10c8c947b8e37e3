//! TCP connections that do not wait on one lost SYN: Linux sends a lost SYN again only after a
//! second (then two, then four), so a relay connection over a lossy network would often take
//! seconds. A second attempt starts after half a second and a third after one and a half (to
//! the host's next address when it has several, as Happy Eyeballs does); an attempt that fails
//! at once lets the next start at once; the first connection made wins and the others are
//! dropped (closed).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};

/// When the attempts after the first start, counted from the first.
pub const STAGGER: [Duration; 2] = [Duration::from_millis(500), Duration::from_millis(1500)];

/// Connects to `host:port`.
pub async fn connect(host: &str, port: u16) -> io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} has no address"),
        ));
    }
    race(STAGGER.len() + 1, &STAGGER, |i| {
        connect_marked(addrs[i % addrs.len()])
    })
    .await
}

/// The firewall mark put on every connection dialed (0: none).
static MARK: AtomicU32 = AtomicU32::new(0);

/// Puts `mark` on every connection dialed from now on (Linux; pinholed's own traffic stays
/// outside the tunnel while an exit node is used). Elsewhere it changes nothing.
pub fn mark_connections(mark: u32) {
    MARK.store(mark, Ordering::Relaxed);
}

async fn connect_marked(to: SocketAddr) -> io::Result<TcpStream> {
    let socket = if to.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    #[cfg(target_os = "linux")]
    {
        let mark = MARK.load(Ordering::Relaxed);
        if mark != 0 {
            if let Err(e) = socket2::SockRef::from(&socket).set_mark(mark) {
                tracing::debug!("cannot mark the relay connection: {e}");
            }
        }
    }
    socket.connect(to).await
}

/// Makes up to `attempts` tries with `attempt(i)`, the `i`-th starting at `stagger[i - 1]`
/// (or as soon as every earlier one has failed); the first success, or the first error when
/// all failed.
pub async fn race<T, F, Fut>(attempts: usize, stagger: &[Duration], attempt: F) -> io::Result<T>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = io::Result<T>>,
{
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let start = tokio::time::Instant::now();
    let mut running = FuturesUnordered::new();
    let mut first_error = None;
    let mut started = 0;
    loop {
        // The first attempt, or the next one at once when every earlier one has failed.
        if started < attempts && running.is_empty() {
            running.push(attempt(started));
            started += 1;
        }
        let next_at = stagger
            .get(started.wrapping_sub(1))
            .filter(|_| started < attempts)
            .map(|d| start + *d);
        tokio::select! {
            Some(r) = running.next() => match r {
                Ok(v) => return Ok(v),
                Err(e) => {
                    first_error.get_or_insert(e);
                    if running.is_empty() && started >= attempts {
                        break;
                    }
                }
            },
            _ = async { tokio::time::sleep_until(next_at.unwrap_or(start)).await }, if next_at.is_some() => {
                tracing::debug!("no TCP connection after {:.1} s: trying again beside it", start.elapsed().as_secs_f64());
                running.push(attempt(started));
                started += 1;
            }
            else => break,
        }
    }
    Err(first_error.unwrap_or_else(|| io::Error::other("no connection attempt was made")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Attempt `i` takes `took[i]` and fails if `fails[i]`.
    async fn fake(i: usize, took: &[u64], fails: &[bool]) -> io::Result<usize> {
        tokio::time::sleep(ms(took[i])).await;
        if fails[i] {
            Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("attempt {i}"),
            ))
        } else {
            Ok(i)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_quick_connection_makes_no_second_attempt() {
        let made = AtomicUsize::new(0);
        let r = race(3, &STAGGER, |i| {
            made.fetch_add(1, Ordering::Relaxed);
            fake(i, &[20, 20, 20], &[false; 3])
        })
        .await;
        assert_eq!(r.unwrap(), 0);
        assert_eq!(made.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_syn_is_overtaken_by_the_second_attempt() {
        let t0 = tokio::time::Instant::now();
        // The first SYN is lost: the kernel's retransmission connects it at 1.05 s.
        let r = race(3, &STAGGER, |i| fake(i, &[1050, 50, 50], &[false; 3])).await;
        assert_eq!(r.unwrap(), 1);
        assert_eq!(t0.elapsed(), ms(550));
        // Both of the first two lost: the third, at 1.5 s.
        let t0 = tokio::time::Instant::now();
        let r = race(3, &STAGGER, |i| fake(i, &[3050, 2550, 50], &[false; 3])).await;
        assert_eq!(r.unwrap(), 2);
        assert_eq!(t0.elapsed(), ms(1550));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_starts_the_next_attempt_at_once_and_all_failing_give_the_first_error() {
        let t0 = tokio::time::Instant::now();
        let r = race(3, &STAGGER, |i| {
            fake(i, &[10, 10, 10], &[true, false, false])
        })
        .await;
        assert_eq!(r.unwrap(), 1);
        assert_eq!(t0.elapsed(), ms(20));
        let r = race(3, &STAGGER, |i| fake(i, &[10, 10, 10], &[true; 3])).await;
        assert_eq!(r.unwrap_err().to_string(), "attempt 0");
    }

    #[tokio::test]
    async fn connects_to_a_listener_on_loopback() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let s = connect("127.0.0.1", port).await.unwrap();
        assert_eq!(s.peer_addr().unwrap().port(), port);
        drop(l);
        let e = connect("127.0.0.1", port).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    }
}
