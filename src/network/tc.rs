//! Token bucket filter (TBF) parameters for a bandwidth limit, encoded as the kernel's
//! `TCA_TBF_*` attributes (netlink-packet-route has no typed TBF options). Pure: sending them is
//! `netlink.rs`'s job.

const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;
/// `TC_LINKLAYER_ETHERNET`: lets the kernel compute transmit times itself (no rate table).
const TC_LINKLAYER_ETHERNET: u8 = 1;
/// One psched tick is 64 ns (`PSCHED_SHIFT` = 6).
const PSCHED_TICK_NS: u64 = 64;
/// How long packets may wait in the queue before being dropped.
const LATENCY_NS: u64 = 50_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TbfParams {
    /// Bytes per second.
    pub rate: u64,
    /// Bucket size in bytes.
    pub burst: u32,
    /// Queue size in bytes.
    pub limit: u32,
}

impl TbfParams {
    /// Parameters for a limit of `bits_per_sec`: a bucket of 10 ms worth of data (at least
    /// 16 KiB and two MTUs, so full-size frames always pass) and a queue of 50 ms.
    pub fn for_rate(bits_per_sec: u64, mtu: u32) -> TbfParams {
        let rate = (bits_per_sec / 8).max(1);
        let burst = (rate / 100)
            .max(16 * 1024)
            .max(2 * u64::from(mtu) + 64)
            .min(u64::from(u32::MAX / 2));
        let queued = (u128::from(rate) * u128::from(LATENCY_NS) / 1_000_000_000) as u64;
        let limit = (burst + queued).min(u64::from(u32::MAX));
        TbfParams {
            rate,
            burst: burst as u32,
            limit: limit as u32,
        }
    }

    /// The time to send `burst` bytes at `rate`, in psched ticks.
    fn buffer_ticks(&self) -> u32 {
        let ns = u128::from(self.burst) * 1_000_000_000 / u128::from(self.rate);
        (ns / u128::from(PSCHED_TICK_NS)).min(u128::from(u32::MAX)) as u32
    }

    /// The TCA_OPTIONS attributes (kind, value) of a TBF qdisc.
    pub fn attributes(&self) -> Vec<(u16, Vec<u8>)> {
        // struct tc_tbf_qopt { tc_ratespec rate, peakrate; u32 limit, buffer, mtu; }
        // struct tc_ratespec { u8 cell_log, linklayer; u16 overhead; s16 cell_align;
        //                      u16 mpu; u32 rate; }
        let mut qopt = Vec::with_capacity(36);
        qopt.push(0u8); // cell_log
        qopt.push(TC_LINKLAYER_ETHERNET);
        qopt.extend_from_slice(&0u16.to_ne_bytes()); // overhead
        qopt.extend_from_slice(&0i16.to_ne_bytes()); // cell_align
        qopt.extend_from_slice(&0u16.to_ne_bytes()); // mpu
        qopt.extend_from_slice(&(self.rate.min(u64::from(u32::MAX)) as u32).to_ne_bytes());
        qopt.extend_from_slice(&[0u8; 12]); // no peak rate
        qopt.extend_from_slice(&self.limit.to_ne_bytes());
        qopt.extend_from_slice(&self.buffer_ticks().to_ne_bytes());
        qopt.extend_from_slice(&0u32.to_ne_bytes()); // mtu (peak rate only)
        let mut attrs = vec![(TCA_TBF_PARMS, qopt)];
        if self.rate > u64::from(u32::MAX) {
            attrs.push((TCA_TBF_RATE64, self.rate.to_ne_bytes().to_vec()));
        }
        attrs.push((TCA_TBF_BURST, self.burst.to_ne_bytes().to_vec()));
        attrs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tbf_for_8mbit() {
        let p = TbfParams::for_rate(8_000_000, 1500);
        assert_eq!(p.rate, 1_000_000);
        assert_eq!(p.burst, 16 * 1024);
        assert_eq!(p.limit, 16 * 1024 + 50_000);
        // 16 KiB at 1 MB/s is 16.384 ms = 256000 ticks of 64 ns.
        assert_eq!(p.buffer_ticks(), 256_000);
        let attrs = p.attributes();
        assert_eq!(attrs.len(), 2);
        assert_eq!(attrs[0].0, TCA_TBF_PARMS);
        assert_eq!(attrs[0].1.len(), 36);
        assert_eq!(&attrs[0].1[8..12], &1_000_000u32.to_ne_bytes());
        assert_eq!(
            attrs[1],
            (TCA_TBF_BURST, (16u32 * 1024).to_ne_bytes().to_vec())
        );
    }

    #[test]
    fn tbf_for_fast_rates_uses_rate64() {
        let p = TbfParams::for_rate(40_000_000_000, 9000);
        assert_eq!(p.rate, 5_000_000_000);
        assert_eq!(p.burst, 50_000_000);
        let attrs = p.attributes();
        assert_eq!(
            attrs[1],
            (TCA_TBF_RATE64, 5_000_000_000u64.to_ne_bytes().to_vec())
        );
        assert_eq!(&attrs[0].1[8..12], &u32::MAX.to_ne_bytes());
    }
}
