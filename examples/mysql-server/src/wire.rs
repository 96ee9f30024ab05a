//! Socket-level pieces: the error packets that opensrv-mysql cannot write,
//! and a look at whether the client is still there.
//!
//! opensrv-mysql writes an error only from its `ErrorKind`, an enum of the
//! codes up to 1885 whose SQLSTATE it derives itself: there is no 3024
//! (`max_execution_time`) nor 1957 (MariaDB's unknown query id). So every
//! error this server sends goes through a side door of the write half it
//! hands to opensrv: the handler drops opensrv's result writer unused (it
//! then writes nothing for the command) and queues a complete error packet,
//! which goes out before anything else is written, at the latest when
//! opensrv flushes at the end of the command.

use std::io;
use std::net::TcpStream;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use tokio::io::AsyncWrite;
use tokio::net::tcp::OwnedWriteHalf;

/// The largest payload of one MySQL packet.
const MAX_PAYLOAD: usize = 0xFF_FFFF;

/// The side door: bytes queued here precede the next write.
#[derive(Clone, Default)]
pub struct Door(Arc<Mutex<Vec<u8>>>);

impl Door {
    /// Queues the error packet answering a `COM_QUERY` whose text was `query`.
    pub fn error(&self, query: &str, code: u16, sqlstate: &str, message: &str) {
        // The reply's sequence number follows the last packet of the
        // command: one packet per full payload, then one more (maybe empty).
        let seq = ((query.len() + 1) / MAX_PAYLOAD + 1) as u8;
        let mut state = [b'H', b'Y', b'0', b'0', b'0'];
        if sqlstate.len() == 5 && sqlstate.is_ascii() {
            state.copy_from_slice(sqlstate.as_bytes());
        }
        // Keep the message well inside one packet.
        let mut end = message.len().min(8192);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let mut payload = Vec::with_capacity(9 + end);
        payload.push(0xFF);
        payload.extend_from_slice(&code.to_le_bytes());
        payload.push(b'#');
        payload.extend_from_slice(&state);
        payload.extend_from_slice(&message.as_bytes()[..end]);
        let len = payload.len() as u32;
        let mut queue = self.0.lock().unwrap_or_else(|p| p.into_inner());
        queue.extend_from_slice(&len.to_le_bytes()[..3]);
        queue.push(seq);
        queue.extend_from_slice(&payload);
    }
}

/// The write half handed to opensrv-mysql, with the side door.
pub struct Out {
    sock: OwnedWriteHalf,
    door: Door,
}

impl Out {
    pub fn new(sock: OwnedWriteHalf, door: Door) -> Out {
        Out { sock, door }
    }

    /// Writes out what waits in the door.
    fn poll_door(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut queue = self.door.0.lock().unwrap_or_else(|p| p.into_inner());
        while !queue.is_empty() {
            let n = ready!(Pin::new(&mut self.sock).poll_write(cx, &queue))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            queue.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Out {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_door(cx))?;
        Pin::new(&mut this.sock).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_door(cx))?;
        Pin::new(&mut this.sock).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_door(cx))?;
        Pin::new(&mut this.sock).poll_shutdown(cx)
    }
}

/// Whether the client is still connected, without reading anything: its
/// end of the socket is open (nothing to read yet, or a next command), not
/// closed nor reset. A `COM_QUIT` waiting to be read counts as gone. Needs
/// `sock` non-blocking (a clone of a tokio socket is).
pub fn client_alive(sock: &TcpStream, conn_id: u64) -> bool {
    let mut head = [0; 5];
    let alive = match sock.peek(&mut head) {
        Ok(n) => n > 0 && head != [1, 0, 0, 0, 1],
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
    };
    if !alive {
        eprintln!("conn {conn_id}: the client hung up; its statement is killed");
    }
    alive
}
