//! The load generator's own WebSocket client for round trips: the handshake written by
//! hand, one pre-masked frame copied per request, and replies counted by their frame
//! headers (no UTF-8 check, no allocation per message). It costs a fraction of a full client
//! per message, so that a round-trip figure measures the server, not the generator.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The mask key of every frame this client sends (the server unmasks any key).
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// An open WebSocket over which frames are counted, not decoded.
pub(crate) struct RawSocket {
    stream: TcpStream,
    /// Bytes read and not yet counted as a whole frame.
    buffer: Vec<u8>,
    /// Engine.IO (socket.io): its pings (`2`) are answered (`3`) and not counted.
    engine_io: bool,
}

impl RawSocket {
    /// Opens a WebSocket to `path` on `addr` from 127.0.0.`n` (see [`crate::load::tcp`]).
    pub(crate) async fn connect(addr: SocketAddr, path: &str, n: usize) -> io::Result<Self> {
        let mut stream = crate::load::tcp(addr, n).await;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buffer = Vec::with_capacity(64 * 1024);
        let head_end = loop {
            if stream.read_buf(&mut buffer).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
        };
        if !buffer.starts_with(b"HTTP/1.1 101") {
            let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
            return Err(io::Error::other(format!("the upgrade was refused: {head}")));
        }
        buffer.drain(..head_end);
        Ok(Self {
            stream,
            buffer,
            engine_io: false,
        })
    }

    /// A socket.io (Engine.IO 4) connection over WebSocket, joined to the `/` namespace:
    /// the open packet read, `40` sent, the namespace's `40{…}` read.
    pub(crate) async fn connect_socketio(addr: SocketAddr, n: usize) -> io::Result<Self> {
        let mut socket = Self::connect(addr, "/socket.io/?EIO=4&transport=websocket", n).await?;
        let mut first = Vec::new();
        socket
            .read_each(|payload| {
                if first.is_empty() {
                    first = payload.to_vec();
                }
            })
            .await?;
        if !first.starts_with(b"0{") {
            return Err(io::Error::other(format!(
                "no Engine.IO open packet: the first frame was {:?}",
                String::from_utf8_lossy(&first)
            )));
        }
        socket.engine_io = true;
        socket.write(&masked_text(b"40")).await?;
        let mut joined = Vec::new();
        while joined.is_empty() {
            socket
                .read_each(|payload| joined = payload.to_vec())
                .await?;
        }
        if !joined.starts_with(b"40") {
            return Err(io::Error::other(format!(
                "the namespace did not accept the connection: {}",
                String::from_utf8_lossy(&joined)
            )));
        }
        Ok(socket)
    }

    /// Writes `bytes` (whole frames) at once.
    pub(crate) async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Waits for data, reads what has arrived, and returns how many whole text or binary
    /// frames it completes (control frames are skipped; a close ends the socket).
    pub(crate) async fn read_frames(&mut self) -> io::Result<usize> {
        self.read_each(|_| {}).await
    }

    /// As [`read_frames`](Self::read_frames), handing each data frame's payload to `each`.
    pub(crate) async fn read_each(&mut self, mut each: impl FnMut(&[u8])) -> io::Result<usize> {
        loop {
            let mut pings = 0;
            let engine_io = self.engine_io;
            let (frames, used) = frames_in(&self.buffer, |payload| {
                if engine_io && payload == b"2" {
                    pings += 1;
                } else {
                    each(payload);
                }
            })?;
            self.buffer.drain(..used);
            for _ in 0..pings {
                self.stream.write_all(&masked_text(b"3")).await?;
            }
            let frames = frames - pings;
            if frames > 0 {
                return Ok(frames);
            }
            if self.buffer.capacity() - self.buffer.len() < 16 * 1024 {
                self.buffer.reserve(64 * 1024);
            }
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Sends a close frame and drops the socket.
    pub(crate) async fn close(mut self) {
        let _ = self.stream.write_all(&masked(0x8, &[0x03, 0xe8])).await;
    }

    /// Leaves the async runtime: the stream (non-blocking) as a mio one, and the bytes read
    /// past the last whole frame.
    fn into_mio(self) -> io::Result<(mio::net::TcpStream, Vec<u8>)> {
        let stream = mio::net::TcpStream::from_std(self.stream.into_std()?);
        Ok((stream, self.buffer))
    }
}

/// Reads the data frames of many sockets on the calling thread, through one epoll set
/// (mio), with one `read` per socket each time it has data: no task to wake, no read that
/// only learns that nothing is left. `each(socket, payload)` gets every data frame and says
/// whether that socket is done; a socket that is done is sent a close frame and no longer
/// read. Returns when every socket is done or was closed by the server, with the number of
/// those closed before they were done; fails after `idle` with nothing to read.
///
/// One read per readiness is enough on Linux: a read that did not fill the buffer emptied
/// the socket, and data that arrives later raises a new edge (a read that filled it asks
/// for the edge again).
///
/// With `pace`, the thread never sleeps on the sockets: it looks without waiting and, when
/// nothing is ready, sleeps `pace` on a timer. A sender then never has to wake it (on a VM,
/// an inter-processor interrupt paid in the sender's kernel time for each send that finds
/// the receiver asleep), so the sender's CPU time is its own work; arrival times are late
/// by up to `pace` (plus the timer's slack).
pub(crate) fn receive_all(
    sockets: Vec<RawSocket>,
    idle: std::time::Duration,
    pace: Option<std::time::Duration>,
    mut each: impl FnMut(usize, &[u8]) -> bool,
) -> io::Result<usize> {
    use std::io::Read;

    let mut poll = mio::Poll::new()?;
    let mut readers = Vec::with_capacity(sockets.len());
    for (n, socket) in sockets.into_iter().enumerate() {
        let (mut stream, pending) = socket.into_mio()?;
        poll.registry()
            .register(&mut stream, mio::Token(n), mio::Interest::READABLE)?;
        readers.push(Reader {
            stream: Some(stream),
            pending: Vec::new(),
            early: false,
        });
        // Frames that came with the subscribe reply.
        readers[n].take(n, &pending, &mut each);
    }
    let mut events = mio::Events::with_capacity(1024);
    let mut scratch = vec![0u8; 256 * 1024];
    let mut last_event = std::time::Instant::now();
    while readers.iter().any(|reader| reader.stream.is_some()) {
        let wait = if pace.is_some() {
            std::time::Duration::ZERO
        } else {
            idle
        };
        match poll.poll(&mut events, Some(wait)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => result?,
        }
        if events.is_empty() {
            if let Some(pace) = pace.filter(|_| last_event.elapsed() < idle) {
                std::thread::sleep(pace);
                continue;
            }
            let open = readers.iter().filter(|r| r.stream.is_some()).count();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{open} sockets still open and nothing arrived for {idle:?}"),
            ));
        }
        last_event = std::time::Instant::now();
        for event in &events {
            let n = event.token().0;
            let reader = &mut readers[n];
            let Some(stream) = &mut reader.stream else {
                continue;
            };
            let read = match stream.read(&mut scratch) {
                Ok(0) => {
                    reader.closed_early();
                    continue;
                }
                Ok(read) => read,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            };
            reader.take(n, &scratch[..read], &mut each);
            if read == scratch.len() {
                if let Some(stream) = &mut reader.stream {
                    poll.registry()
                        .reregister(stream, mio::Token(n), mio::Interest::READABLE)?;
                }
            }
        }
    }
    Ok(readers.iter().filter(|reader| reader.early).count())
}

/// One socket of [`receive_all`].
struct Reader {
    /// `None` once done or closed.
    stream: Option<mio::net::TcpStream>,
    /// Bytes read past the last whole frame.
    pending: Vec<u8>,
    /// Closed by the server before `each` said it was done.
    early: bool,
}

impl Reader {
    /// Hands the whole frames of what was pending and `bytes` to `each` (none after the one
    /// that makes the socket done), and keeps the rest.
    fn take(&mut self, n: usize, bytes: &[u8], each: &mut impl FnMut(usize, &[u8]) -> bool) {
        let joined;
        let bytes = if self.pending.is_empty() {
            bytes
        } else {
            self.pending.extend_from_slice(bytes);
            joined = std::mem::take(&mut self.pending);
            &joined[..]
        };
        let mut done = false;
        let counted = frames_in(bytes, |payload| {
            if !done {
                done = each(n, payload);
            }
        });
        match counted {
            _ if done => self.finish(),
            Ok((_, used)) => self.pending.extend_from_slice(&bytes[used..]),
            // A close frame.
            Err(_) => self.closed_early(),
        }
    }

    /// Done: a close frame is sent (best effort: the socket does not block) and the socket
    /// dropped.
    fn finish(&mut self) {
        use std::io::Write;
        if let Some(mut stream) = self.stream.take() {
            let _ = stream.write_all(&masked(0x8, &[0x03, 0xe8]));
        }
    }

    fn closed_early(&mut self) {
        if self.stream.take().is_some() {
            self.early = true;
        }
    }
}

/// A masked text frame of `payload`, as a client must send it.
pub(crate) fn masked_text(payload: &[u8]) -> Vec<u8> {
    masked(0x1, payload)
}

fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(0x80 | opcode);
    match payload.len() {
        len @ 0..=125 => frame.push(0x80 | len as u8),
        len @ 126..=65535 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&MASK);
    frame.extend(payload.iter().zip(MASK.iter().cycle()).map(|(b, m)| b ^ m));
    frame
}

/// Counts the whole data frames at the start of `bytes`; returns them and the bytes they
/// (and the control frames among them) take. A close frame is an error.
#[cfg(test)]
fn count_frames(bytes: &[u8]) -> io::Result<(usize, usize)> {
    frames_in(bytes, |_| {})
}

/// As `count_frames`, handing each data frame's payload (unmasked: the server's) to `each`.
fn frames_in(bytes: &[u8], mut each: impl FnMut(&[u8])) -> io::Result<(usize, usize)> {
    let (mut frames, mut at) = (0, 0);
    while let Some(header) = bytes.get(at..at + 2) {
        let opcode = header[0] & 0x0f;
        let masked = header[1] & 0x80 != 0;
        let (len, mut size) = match header[1] & 0x7f {
            126 => match bytes.get(at + 2..at + 4) {
                Some(len) => (u16::from_be_bytes([len[0], len[1]]) as usize, 4),
                None => break,
            },
            127 => match bytes.get(at + 2..at + 10) {
                Some(len) => (
                    usize::try_from(u64::from_be_bytes(len.try_into().expect("8 bytes")))
                        .map_err(io::Error::other)?,
                    10,
                ),
                None => break,
            },
            len => (len as usize, 2),
        };
        if masked {
            size += 4;
        }
        if bytes.len() < at + size + len {
            break;
        }
        match opcode {
            0x1 | 0x2 => {
                frames += 1;
                each(&bytes[at + size..at + size + len]);
            }
            0x8 => return Err(io::Error::other("the server closed the connection")),
            _ => {}
        }
        at += size + len;
    }
    Ok((frames, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_counted_whole_and_only_whole() {
        let pong = [&[0x81, 5][..], b"hello"].concat();
        let long = [&[0x81, 126, 0, 200][..], &[b'x'; 200]].concat();
        let ping = [0x89, 0];
        let stream = [&pong[..], &ping, &long, &pong[..3]].concat();
        assert_eq!(
            count_frames(&stream).unwrap(),
            (2, pong.len() + 2 + long.len())
        );
        assert!(count_frames(&[0x88, 0]).is_err());
        let sent = masked_text(b"{}");
        assert_eq!(sent[..2], [0x81, 0x82]);
        assert_eq!(sent[6] ^ MASK[0], b'{');
    }
}
