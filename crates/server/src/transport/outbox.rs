//! The half of a connection that the hub and the API reach: the bounded queue of framed
//! pushes, the control inbox, and the waker of the connection's task.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Waker;

use atomic_waker::AtomicWaker;
use bytes::Bytes;
use parking_lot::Mutex;
use wshub_core::connection::{ConnectionHandle, Control, Encoding, TransportInfo};
use wshub_core::prepared::PreparedData;

static QUEUED: AtomicUsize = AtomicUsize::new(0);

/// Bytes queued for clients in this process (the `wshub_queue_bytes` gauge).
pub fn queued_bytes() -> usize {
    QUEUED.load(Ordering::Relaxed)
}

/// How one kind of transport writes a push, and what it tells the node about itself.
pub trait Framing: Send + Sync + 'static {
    /// The push as this connection writes it: built once per push in its framing cache
    /// when every connection of the kind writes the same bytes. `None`: not for this
    /// connection.
    fn frame(&self, push: &PreparedData) -> Option<Bytes>;

    fn transport(&self) -> TransportInfo<'_>;
}

#[derive(Default)]
struct Outbox {
    frames: VecDeque<Bytes>,
    bytes: usize,
    overflow: bool,
    controls: VecDeque<Control>,
}

/// One connection as the node sees it. See the module docs.
pub struct Conn<F> {
    id: u64,
    encoding: Encoding,
    /// `client.queue_max_size`.
    max_queue: usize,
    framing: F,
    outbox: Mutex<Outbox>,
    waker: AtomicWaker,
}

/// What [`Conn::drain`] moved.
#[derive(Debug, Default)]
pub(super) struct Drained {
    /// The queue overflowed: the connection must close with 3008 (its queue is freed).
    pub overflow: bool,
    pub frames: u64,
    pub bytes: usize,
    /// Controls were taken.
    pub controls: bool,
}

impl<F: Framing> Conn<F> {
    pub fn new(id: u64, encoding: Encoding, max_queue: usize, framing: F) -> Arc<Self> {
        Arc::new(Conn {
            id,
            encoding,
            max_queue,
            framing,
            outbox: Mutex::new(Outbox::default()),
            waker: AtomicWaker::new(),
        })
    }

    pub fn framing(&self) -> &F {
        &self.framing
    }

    pub(super) fn max_queue(&self) -> usize {
        self.max_queue
    }

    /// Bytes waiting in the queue.
    pub(super) fn queued(&self) -> usize {
        self.outbox.lock().bytes
    }

    pub(super) fn register(&self, waker: &Waker) {
        self.waker.register(waker);
    }

    /// Queues a frame, or marks the connection slow.
    fn queue(&self, bytes: Bytes) {
        let len = bytes.len();
        let mut o = self.outbox.lock();
        if o.overflow {
            return;
        }
        if o.bytes + len > self.max_queue {
            // A slow reader: it is closed with 3008 and its queue freed; the others go on.
            o.overflow = true;
            o.frames = VecDeque::new();
            QUEUED.fetch_sub(o.bytes, Ordering::Relaxed);
            o.bytes = 0;
        } else {
            o.bytes += len;
            QUEUED.fetch_add(len, Ordering::Relaxed);
            o.frames.push_back(bytes);
        }
        drop(o);
        self.waker.wake();
    }

    /// Hands queued frames to `write` while `room` says the writer takes more, and the
    /// queued controls to `controls`.
    pub(super) fn drain(&self, mut room: impl FnMut() -> bool, mut write: impl FnMut(Bytes), controls: &mut Vec<Control>) -> Drained {
        let mut d = Drained::default();
        let mut o = self.outbox.lock();
        if std::mem::take(&mut o.overflow) {
            d.overflow = true;
            return d;
        }
        while room() {
            let Some(f) = o.frames.pop_front() else { break };
            o.bytes -= f.len();
            QUEUED.fetch_sub(f.len(), Ordering::Relaxed);
            d.frames += 1;
            d.bytes += f.len();
            write(f);
        }
        // An idle connection keeps no queue buffer.
        if o.frames.is_empty() && o.frames.capacity() > 0 {
            o.frames = VecDeque::new();
        }
        if !o.controls.is_empty() {
            controls.extend(o.controls.drain(..));
            o.controls = VecDeque::new();
            d.controls = true;
        }
        d
    }

    /// Frees what waits: the connection is over (and out of the hub).
    pub(super) fn release(&self) {
        let mut o = self.outbox.lock();
        QUEUED.fetch_sub(o.bytes, Ordering::Relaxed);
        o.bytes = 0;
        o.frames = VecDeque::new();
        o.controls = VecDeque::new();
    }
}

impl<F: Framing> ConnectionHandle for Conn<F> {
    fn id(&self) -> u64 {
        self.id
    }

    fn encoding(&self) -> Encoding {
        self.encoding
    }

    fn deliver(&self, push: &PreparedData) {
        if let Some(frame) = self.framing.frame(push) {
            self.queue(frame);
        }
    }

    fn control(&self, control: Control) {
        self.outbox.lock().controls.push_back(control);
        self.waker.wake();
    }

    fn transport(&self) -> TransportInfo<'_> {
        self.framing.transport()
    }
}
