//! Reading a client's bytes with a deadline that only runs while a message is half sent.
//!
//! A client may sit idle between requests for as long as it likes; one that stops in the
//! middle of a request (or of the handshake) holds server memory and a thread, so it is cut
//! off when it has been silent for the stall deadline. Reads wait in short ticks, which is
//! also how an idle connection notices that the server is stopping.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long one blocking read waits before the loop looks at the clock and the stop flag.
pub(crate) const TICK: Duration = Duration::from_millis(100);

/// How a read ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Got {
    /// The buffer is full.
    All,
    /// The client closed the connection before the first byte (between messages).
    Closed,
    /// The server is stopping and the client was between messages.
    Stopping,
}

/// Reads exactly `buf.len()` bytes. With `between` (the read starts a new message), silence
/// before the first byte is fine and a stop request ends the wait; once a byte has come (or
/// at once, without `between`) the rest must come within `stall` of the last progress.
///
/// The stream must have a read timeout of [`TICK`].
///
/// # Errors
/// `TimedOut` for a stalled client, `UnexpectedEof` for a connection closed mid-message,
/// other I/O errors as they are.
pub(crate) fn read_within(
    stream: &mut impl Read,
    buf: &mut [u8],
    between: bool,
    stall: Duration,
    stop: &AtomicBool,
) -> io::Result<Got> {
    let mut got = 0;
    let mut progress = Instant::now();
    while got < buf.len() {
        match stream.read(&mut buf[got..]) {
            Ok(0) if got == 0 && between => return Ok(Got::Closed),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the connection in the middle of a message",
                ));
            }
            Ok(n) => {
                got += n;
                progress = Instant::now();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if got == 0 && between {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(Got::Stopping);
                    }
                    progress = Instant::now();
                } else if progress.elapsed() >= stall {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the client stalled for {} s in the middle of a message",
                            stall.as_secs_f32()
                        ),
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Got::All)
}

/// Reads and drops `n` bytes (the data of a refused write), in the same way.
///
/// # Errors
/// As [`read_within`].
pub(crate) fn skip_within(
    stream: &mut impl Read,
    mut n: u64,
    stall: Duration,
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut sink = [0u8; 4096];
    while n > 0 {
        let k = n.min(sink.len() as u64) as usize;
        read_within(stream, &mut sink[..k], false, stall, stop)?;
        n -= k as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn idle_is_fine_a_stall_is_cut_off_and_stop_ends_the_wait() {
        let (mut client, mut server) = UnixStream::pair().expect("pair");
        server.set_read_timeout(Some(TICK)).expect("timeout");
        let stop = AtomicBool::new(false);
        let stall = Duration::from_millis(300);
        // Idle for longer than the stall deadline before the first byte: still served.
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            client.write_all(b"abcd").expect("write");
            client.write_all(b"ef").expect("write");
            // Then stop half way through a message.
            std::thread::sleep(Duration::from_millis(1000));
            client
        });
        let mut buf = [0u8; 6];
        assert_eq!(
            read_within(&mut server, &mut buf, true, stall, &stop).expect("read"),
            Got::All
        );
        assert_eq!(&buf, b"abcdef");
        let started = Instant::now();
        let e = read_within(&mut server, &mut buf, false, stall, &stop).expect_err("stalled");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "{:?}",
            started.elapsed()
        );
        let client = writer.join().expect("writer");
        stop.store(true, Ordering::Relaxed);
        assert_eq!(
            read_within(&mut server, &mut buf, true, stall, &stop).expect("read"),
            Got::Stopping
        );
        drop(client);
        stop.store(false, Ordering::Relaxed);
        assert_eq!(
            read_within(&mut server, &mut buf, true, stall, &stop).expect("read"),
            Got::Closed
        );
    }
}
