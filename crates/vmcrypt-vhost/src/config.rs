//! What the device offers the guest: virtio feature bits and the virtio-blk configuration
//! space (VIRTIO 1.2, 5.2.4), written field by field in little-endian order.

use std::mem::offset_of;

use virtio_bindings::virtio_blk::{self as blk, virtio_blk_config};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

/// Largest discard or write-zeroes segment, in 512-byte sectors (1 GiB).
pub const MAX_ZERO_SECTORS: u32 = 1 << 21;
/// Segments per discard or write-zeroes request.
pub const MAX_ZERO_SEGS: u32 = 32;

/// The device as the guest sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Guest-visible size in bytes (a multiple of 512).
    pub bytes: u64,
    /// The disk's data unit: the logical block size the guest is told to use.
    pub unit: u32,
    /// Virtqueues.
    pub queues: u16,
    /// Descriptors per virtqueue.
    pub queue_size: u16,
    /// Writes refused.
    pub read_only: bool,
}

impl Geometry {
    /// Data segments per request: the queue size less the header and status descriptors.
    pub fn seg_max(&self) -> u32 {
        u32::from(self.queue_size.saturating_sub(2)).max(1)
    }

    /// The virtio feature bits offered (vhost-user's PROTOCOL_FEATURES is added by the
    /// backend).
    pub fn features(&self) -> u64 {
        let bits = [
            VIRTIO_F_VERSION_1,
            VIRTIO_RING_F_EVENT_IDX,
            VIRTIO_RING_F_INDIRECT_DESC,
            blk::VIRTIO_BLK_F_SEG_MAX,
            blk::VIRTIO_BLK_F_BLK_SIZE,
            blk::VIRTIO_BLK_F_TOPOLOGY,
            blk::VIRTIO_BLK_F_FLUSH,
            blk::VIRTIO_BLK_F_CONFIG_WCE,
            blk::VIRTIO_BLK_F_MQ,
            blk::VIRTIO_BLK_F_DISCARD,
            blk::VIRTIO_BLK_F_WRITE_ZEROES,
        ];
        let mut f = bits.iter().fold(0u64, |f, &b| f | 1 << b);
        if self.read_only {
            f |= 1 << blk::VIRTIO_BLK_F_RO;
        }
        f
    }

    /// The configuration space, with the write cache on (`wce`) or off.
    pub fn config_space(&self, writeback: bool) -> [u8; CONFIG_LEN] {
        let mut c = [0u8; CONFIG_LEN];
        let mut put = |at: usize, bytes: &[u8]| c[at..at + bytes.len()].copy_from_slice(bytes);
        put(
            offset_of!(virtio_blk_config, capacity),
            &(self.bytes / 512).to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, seg_max),
            &self.seg_max().to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, blk_size),
            &self.unit.to_le_bytes(),
        );
        // Topology: the physical block is the logical one; I/O in whole units is optimal.
        put(
            offset_of!(virtio_blk_config, min_io_size),
            &1u16.to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, opt_io_size),
            &1u32.to_le_bytes(),
        );
        put(offset_of!(virtio_blk_config, wce), &[u8::from(writeback)]);
        put(
            offset_of!(virtio_blk_config, num_queues),
            &self.queues.to_le_bytes(),
        );
        let align = self.unit / 512;
        put(
            offset_of!(virtio_blk_config, max_discard_sectors),
            &MAX_ZERO_SECTORS.to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, max_discard_seg),
            &MAX_ZERO_SEGS.to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, discard_sector_alignment),
            &align.to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, max_write_zeroes_sectors),
            &MAX_ZERO_SECTORS.to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, max_write_zeroes_seg),
            &MAX_ZERO_SEGS.to_le_bytes(),
        );
        put(offset_of!(virtio_blk_config, write_zeroes_may_unmap), &[1]);
        c
    }
}

/// Bytes of configuration space served: up to the secure-erase fields, which are not offered.
pub const CONFIG_LEN: usize = offset_of!(virtio_blk_config, max_secure_erase_sectors);

/// Where the guest writes `wce` to turn the write cache on or off.
pub const WCE_OFFSET: usize = offset_of!(virtio_blk_config, wce);

/// `len` bytes of the configuration space from `offset`, as much of it as exists (the
/// frontend may ask for more than the device has; the rest reads as zeros).
pub fn config_slice(space: &[u8; CONFIG_LEN], offset: u32, len: u32) -> Vec<u8> {
    let mut out = vec![0u8; len as usize];
    let start = (offset as usize).min(CONFIG_LEN);
    let end = (offset as usize)
        .saturating_add(len as usize)
        .min(CONFIG_LEN);
    out[..end - start].copy_from_slice(&space[start..end]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo(unit: u32, read_only: bool) -> Geometry {
        Geometry {
            bytes: 64 << 20,
            unit,
            queues: 2,
            queue_size: 128,
            read_only,
        }
    }

    #[test]
    fn the_config_space_has_the_spec_layout() {
        let c = geo(4096, false).config_space(true);
        let u32_at = |at: usize| u32::from_le_bytes(c[at..at + 4].try_into().expect("4"));
        assert_eq!(
            u64::from_le_bytes(c[0..8].try_into().expect("8")),
            (64 << 20) / 512
        );
        assert_eq!(u32_at(12), 126, "seg_max");
        assert_eq!(u32_at(20), 4096, "blk_size");
        assert_eq!(c[32], 1, "wce");
        assert_eq!(u16::from_le_bytes([c[34], c[35]]), 2, "num_queues");
        assert_eq!(u32_at(44), 8, "discard alignment in sectors");
        assert_eq!(c[56], 1, "write zeroes may unmap");
        assert_eq!(CONFIG_LEN, 60);
        assert_eq!(geo(512, false).config_space(false)[32], 0);
        assert_eq!(u32_at(20), 4096);
    }

    #[test]
    fn features_and_config_reads() {
        let f = geo(512, true).features();
        for bit in [32, 29, 2, 6, 9, 11, 12, 13, 14, 5] {
            assert!(f & (1 << bit) != 0, "bit {bit}");
        }
        assert_eq!(
            geo(512, false).features() & (1 << 5),
            0,
            "RO only when asked"
        );
        let c = geo(512, false).config_space(true);
        assert_eq!(config_slice(&c, 20, 4), 512u32.to_le_bytes());
        assert_eq!(
            config_slice(&c, 58, 8),
            vec![0; 8],
            "past the end reads zeros"
        );
        assert_eq!(config_slice(&c, u32::MAX, 4), vec![0; 4]);
    }
}
