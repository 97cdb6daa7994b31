//! Typed access to VPP's buffers: the one place that knows where a
//! `vlib_buffer_t` keeps what kp reads and writes (current data and
//! length, flags, offload flags, the TX adjacency, chains), so node code
//! never does pointer arithmetic on buffer metadata.

use super::sys;
use core::marker::PhantomData;

/// VLIB_BUFFER_PRE_DATA_SIZE: how far `current_data` may go below 0.
const PRE_DATA: isize = 128;

/// A VPP buffer that the current node call owns.
///
/// Made only by [`BufferRef::from_raw`], whose contract is the whole
/// invariant; every method then stays inside the buffer's 256-byte header
/// and its data area.
pub struct BufferRef<'a> {
    b: *mut sys::vlib_buffer_t,
    _owned: PhantomData<&'a mut sys::vlib_buffer_t>,
}

impl<'a> BufferRef<'a> {
    /// # Safety
    /// `b` is a live buffer handed to the calling node function, not
    /// accessed through any other reference while the result lives.
    #[inline(always)]
    pub unsafe fn from_raw(b: *mut sys::vlib_buffer_t) -> BufferRef<'a> {
        BufferRef { b, _owned: PhantomData }
    }

    /// The buffer at `index` in VPP's buffer memory.
    ///
    /// # Safety
    /// `vm` is the calling thread's vlib_main_t and `index` a buffer
    /// index that VPP handed to the calling node.
    #[inline(always)]
    pub unsafe fn pointer(vm: *mut sys::vlib_main_t, index: u32) -> *mut sys::vlib_buffer_t {
        // SAFETY: per the contract; buffers are 64-byte aligned at
        // buffer_mem_start + (index << CLIB_LOG2_CACHE_LINE_BYTES).
        unsafe {
            let mem = (*(*vm).buffer_main.cast::<sys::vlib_buffer_main_t>()).buffer_mem_start as *mut u8;
            mem.add((index as usize) << 6).cast()
        }
    }

    #[inline(always)]
    fn header(&self) -> &sys::vlib_buffer_t {
        // SAFETY: the type's invariant.
        unsafe { &*self.b }
    }

    #[inline(always)]
    fn header_mut(&mut self) -> &mut sys::vlib_buffer_t {
        // SAFETY: the type's invariant.
        unsafe { &mut *self.b }
    }

    /// The first buffer's bytes from the current data on, for as long as
    /// the buffer is owned.
    #[inline(always)]
    pub fn into_data(self) -> &'a mut [u8] {
        // SAFETY: VPP keeps current_data..current_data+current_length
        // inside the buffer (current_data >= -128, within pre_data); the
        // invariant makes this the only view of those bytes.
        unsafe {
            let b = self.b;
            let start = (*b).data.as_mut_ptr().offset(isize::from((*b).current_data));
            core::slice::from_raw_parts_mut(start, usize::from((*b).current_length))
        }
    }

    /// The first buffer's bytes from the current data on, for as long as
    /// this view is borrowed.
    #[inline(always)]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `into_data`, for the borrow's lifetime.
        unsafe {
            let b = self.b;
            let start = (*b).data.as_mut_ptr().offset(isize::from((*b).current_data));
            core::slice::from_raw_parts_mut(start, usize::from((*b).current_length))
        }
    }

    /// Where the current data starts (for a prefetch).
    #[inline(always)]
    pub fn data_start(&self) -> *const u8 {
        // SAFETY: as in `data_mut`, without making a reference.
        unsafe { (*self.b).data.as_ptr().offset(isize::from((*self.b).current_data)) }
    }

    #[inline(always)]
    pub fn flags(&self) -> u32 {
        self.header().flags
    }

    #[inline(always)]
    pub fn is_traced(&self) -> bool {
        self.flags() & sys::KP_VLIB_BUFFER_IS_TRACED != 0
    }

    /// Whether the packet goes on in further buffers.
    #[inline(always)]
    pub fn next_buffer(&self) -> Option<u32> {
        (self.flags() & sys::KP_VLIB_BUFFER_NEXT_PRESENT != 0).then(|| self.header().next_buffer)
    }

    /// The packet's length over its whole chain, when VPP has it.
    #[inline(always)]
    pub fn chain_length(&self) -> Option<usize> {
        let h = self.header();
        let rest = if h.flags & sys::KP_VLIB_BUFFER_NEXT_PRESENT == 0 {
            0
        } else if h.flags & sys::KP_VLIB_BUFFER_TOTAL_LENGTH_VALID != 0 {
            h.total_length_not_including_first_buffer as usize
        } else {
            return None;
        };
        Some(usize::from(h.current_length) + rest)
    }

    /// The packet's length over its chain, walking the chain when VPP has
    /// not recorded the total (`None` for a chain longer than any VPP
    /// makes: 256 buffers, 512 KiB of 2 KiB buffers).
    ///
    /// # Safety
    /// `vm` is the calling thread's vlib_main_t (the chain's buffers are
    /// this packet's, owned with it).
    #[inline]
    pub unsafe fn chain_length_in(&self, vm: *mut sys::vlib_main_t) -> Option<usize> {
        if let Some(n) = self.chain_length() {
            return Some(n);
        }
        let mut total = usize::from(self.header().current_length);
        let mut next = self.next_buffer();
        for _ in 0..256 {
            let Some(index) = next else { return Some(total) };
            // SAFETY: a buffer of this packet's chain, read only.
            let b = unsafe { BufferRef::from_raw(BufferRef::pointer(vm, index)) };
            total += usize::from(b.header().current_length);
            next = b.next_buffer();
        }
        None
    }

    /// Makes the packet start `grow` bytes earlier (into the pre-data
    /// headroom) and be `len` bytes long, within this one buffer; the
    /// checksum offload flag goes (the new packet's checksums are whole).
    /// `false`, and nothing changed, for a chain or too little room.
    pub fn reframe(&mut self, grow: usize, len: usize) -> bool {
        let h = self.header_mut();
        let start = isize::from(h.current_data) - grow as isize;
        if h.flags & sys::KP_VLIB_BUFFER_NEXT_PRESENT != 0
            || start < -PRE_DATA
            || len > usize::from(h.current_length) + grow
        {
            return false;
        }
        h.current_data = start as i16;
        h.current_length = len as u16;
        h.flags &= !sys::KP_VNET_BUFFER_F_OFFLOAD;
        true
    }

    /// Moves the packet's start by `delta` bytes (negative: into the
    /// pre-data headroom) within its first buffer. `false`, and nothing
    /// changed, when that leaves the headroom or empties the buffer.
    pub fn move_start(&mut self, delta: isize) -> bool {
        let h = self.header_mut();
        let start = isize::from(h.current_data) + delta;
        let len = h.current_length as isize;
        if start < -PRE_DATA || delta >= len {
            return false;
        }
        h.current_data = start as i16;
        h.current_length = (len - delta) as u16;
        true
    }

    /// Moves the packet's start `by` bytes later within its first buffer
    /// (a header that shrinks) and gives its bytes from there. `None`, and
    /// nothing changed, when that would empty the buffer.
    #[inline(always)]
    pub fn advance(mut self, by: usize) -> Option<&'a mut [u8]> {
        let h = self.header_mut();
        let len = usize::from(h.current_length);
        // (The start stays inside the buffer: it moves less than the
        // bytes that follow it.)
        let start = i16::try_from(isize::from(h.current_data) + by as isize).ok().filter(|_| by < len)?;
        h.current_data = start;
        h.current_length = (len - by) as u16;
        Some(self.into_data())
    }

    /// After translation to another family (`v6`), with the transport
    /// header `l4_offset` bytes after the new start: the flags and header
    /// offsets that offload and segmentation read follow the new headers
    /// (offsets only where VPP had set them); IPv6 has no header checksum
    /// to offload.
    pub fn set_family(&mut self, v6: bool, l4_offset: i16) {
        let h = self.header_mut();
        let start = h.current_data;
        let flags = h.flags & !(sys::KP_VNET_BUFFER_F_IS_IP4 | sys::KP_VNET_BUFFER_F_IS_IP6);
        h.flags = flags | if v6 { sys::KP_VNET_BUFFER_F_IS_IP6 } else { sys::KP_VNET_BUFFER_F_IS_IP4 };
        let flags = h.flags;
        let base = self.b.cast::<u8>();
        // SAFETY: aligned i16 and u8 fields of the buffer header's vnet
        // opaque area; the invariant allows writing.
        unsafe {
            if flags & sys::KP_VNET_BUFFER_F_L3_HDR_OFFSET_VALID != 0 {
                base.add(sys::KP_VNET_L3_HDR_OFFSET_OFFSET as usize).cast::<i16>().write(start);
            }
            if flags & sys::KP_VNET_BUFFER_F_L4_HDR_OFFSET_VALID != 0 {
                base.add(sys::KP_VNET_L4_HDR_OFFSET_OFFSET as usize).cast::<i16>().write(start + l4_offset);
            }
            if v6 {
                *base.add(sys::KP_VNET_OFLAGS_OFFSET as usize) &=
                    !(sys::KP_VNET_BUFFER_OFFLOAD_F_IP_CKSUM as u8);
            }
        }
    }

    /// `vnet_buffer(b)->oflags`: checksum and segmentation offloads.
    #[inline(always)]
    pub fn offload_flags(&self) -> u8 {
        // SAFETY: a byte of the buffer header (the vnet opaque area).
        unsafe { *self.b.cast::<u8>().add(sys::KP_VNET_OFLAGS_OFFSET as usize) }
    }

    /// Whether the TCP/UDP checksum field holds a partial (pseudo-header)
    /// sum that offload will finish.
    #[inline(always)]
    pub fn l4_checksum_offloaded(&self) -> bool {
        let l4 = (sys::KP_VNET_BUFFER_OFFLOAD_F_TCP_CKSUM | sys::KP_VNET_BUFFER_OFFLOAD_F_UDP_CKSUM) as u8;
        self.flags() & sys::KP_VNET_BUFFER_F_OFFLOAD != 0 && self.offload_flags() & l4 != 0
    }

    /// `vnet_buffer(b)->ip.adj_index[VLIB_TX]`: set by ip4/6-lookup to the
    /// DPO index that sent the packet here; kp sets it to a pod's next hop.
    #[inline(always)]
    pub fn adj_index_tx(&self) -> u32 {
        // SAFETY: an aligned u32 of the buffer header (vnet opaque area).
        unsafe { self.b.cast::<u8>().add(sys::KP_VNET_IP_ADJ_INDEX_TX_OFFSET as usize).cast::<u32>().read() }
    }

    /// On an output arc: the bytes of L2 header before the IP header
    /// (`vnet_buffer(b)->ip.save_rewrite_length`).
    #[inline(always)]
    pub fn rewrite_length(&self) -> usize {
        // SAFETY: a byte of the buffer header (vnet opaque area).
        usize::from(unsafe {
            self.b.cast::<u8>().add(sys::KP_VNET_IP_SAVE_REWRITE_LENGTH_OFFSET as usize).read()
        })
    }

    /// A packet VPP made itself (an ICMP error among them).
    #[inline(always)]
    pub fn locally_originated(&self) -> bool {
        self.flags() & sys::KP_VNET_BUFFER_F_LOCALLY_ORIGINATED != 0
    }

    #[inline(always)]
    pub fn set_adj_index_tx(&mut self, adj: u32) {
        // SAFETY: as in `adj_index_tx`; the invariant allows writing.
        unsafe {
            self.b.cast::<u8>().add(sys::KP_VNET_IP_ADJ_INDEX_TX_OFFSET as usize).cast::<u32>().write(adj)
        }
    }

    /// Sets the error a drop node counts the packet under.
    #[inline(always)]
    pub fn set_error(&mut self, error: u16) {
        self.header_mut().error = error;
    }

    /// VPP's `vnet_feature_next` (inline in VPP) for a feature without
    /// config data: the next node, and the buffer moved on in its arc.
    ///
    /// # Safety
    /// `heap` is the current shared feature-config heap and the buffer is
    /// on a feature arc.
    #[inline(always)]
    pub unsafe fn take_feature_next(&mut self, heap: *const u32) -> u16 {
        let h = self.header_mut();
        // SAFETY: per the contract, the config index points into the heap.
        let next = unsafe { *heap.add(h.current_config_index as usize) } as u16;
        h.current_config_index += 1;
        next
    }
}
