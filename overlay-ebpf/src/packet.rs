//! The one bounds-checked packet accessor, for tc and XDP contexts alike.

use aya_ebpf::programs::{TcContext, XdpContext};

/// A linear packet buffer between `start()` and `end()`.
pub trait Packet {
    fn start(&self) -> usize;
    fn end(&self) -> usize;

    /// A pointer to a `T` at `offset`, or `None` when the packet is too short.
    ///
    /// The returned pointer is valid until the packet is resized (for tc:
    /// `adjust_room`), and may be unaligned: read it with `read_unaligned`
    /// or use byte arrays.
    #[inline(always)]
    fn ptr_at<T>(&self, offset: usize) -> Option<*mut T> {
        let start = self.start();
        let end = self.end();
        if start + offset + core::mem::size_of::<T>() > end {
            return None;
        }
        Some((start + offset) as *mut T)
    }
}

impl Packet for TcContext {
    #[inline(always)]
    fn start(&self) -> usize {
        self.data()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        self.data_end()
    }
}

impl Packet for XdpContext {
    #[inline(always)]
    fn start(&self) -> usize {
        self.data()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        self.data_end()
    }
}
