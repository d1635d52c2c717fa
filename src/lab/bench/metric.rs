//! The figures `uvs bench` reports, with their CSV names, units and
//! titles.

/// The figures a configuration yields. Rates: higher is better; latency
/// and times: lower is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    ShortRps,
    LatP50Us,
    LatP99Us,
    KeepaliveRps,
    StreamGbps,
    UdpSentPps,
    UdpRecvPps,
    UdpLossPct,
    /// uvs only: the worker's sleeps per answered serial request.
    LatSleepsPerReq,
    /// uvs only: datagrams uvs counted as dropped, in percent of those
    /// sent (set against `UdpLossPct`: the rest was lost outside uvs).
    UdpCountedPct,
    /// Datagrams the client's and servers' own UDP sockets dropped
    /// (`Udp InErrors` in their namespaces), in percent of those sent.
    UdpSocketLossPct,
    LoadMs,
    AddMs,
    RemoveMs,
    AnswersRs1,
    AnswersRs2,
    Errors,
}

impl Metric {
    pub const ALL: [Metric; 17] = [
        Metric::ShortRps,
        Metric::LatP50Us,
        Metric::LatP99Us,
        Metric::KeepaliveRps,
        Metric::StreamGbps,
        Metric::UdpSentPps,
        Metric::UdpRecvPps,
        Metric::UdpLossPct,
        Metric::LatSleepsPerReq,
        Metric::UdpCountedPct,
        Metric::UdpSocketLossPct,
        Metric::LoadMs,
        Metric::AddMs,
        Metric::RemoveMs,
        Metric::AnswersRs1,
        Metric::AnswersRs2,
        Metric::Errors,
    ];

    /// Its name in `results.csv`.
    pub fn key(self) -> &'static str {
        match self {
            Metric::ShortRps => "short_rps",
            Metric::LatP50Us => "latency_p50_us",
            Metric::LatP99Us => "latency_p99_us",
            Metric::KeepaliveRps => "keepalive_rps",
            Metric::StreamGbps => "stream_gbps",
            Metric::UdpSentPps => "udp_sent_pps",
            Metric::UdpRecvPps => "udp_received_pps",
            Metric::UdpLossPct => "udp_loss_pct",
            Metric::LatSleepsPerReq => "latency_worker_sleeps_per_request",
            Metric::UdpCountedPct => "udp_loss_counted_pct",
            Metric::UdpSocketLossPct => "udp_loss_sockets_pct",
            Metric::LoadMs => "load_ms",
            Metric::AddMs => "add_one_ms",
            Metric::RemoveMs => "remove_one_ms",
            Metric::AnswersRs1 => "answers_rs1",
            Metric::AnswersRs2 => "answers_rs2",
            Metric::Errors => "errors",
        }
    }

    pub fn parse(s: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.key() == s)
    }

    pub fn unit(self) -> &'static str {
        match self {
            Metric::ShortRps | Metric::KeepaliveRps => "req/s",
            Metric::LatP50Us | Metric::LatP99Us => "µs",
            Metric::StreamGbps => "Gbit/s",
            Metric::UdpSentPps | Metric::UdpRecvPps => "datagrams/s",
            Metric::UdpLossPct | Metric::UdpCountedPct | Metric::UdpSocketLossPct => "%",
            Metric::LatSleepsPerReq => "sleeps",
            Metric::LoadMs | Metric::AddMs | Metric::RemoveMs => "ms",
            Metric::AnswersRs1 | Metric::AnswersRs2 | Metric::Errors => "requests",
        }
    }

    /// A title for tables and plots.
    pub fn title(self) -> &'static str {
        match self {
            Metric::ShortRps => "short-connection requests/s",
            Metric::LatP50Us => "serial connect+request+close p50",
            Metric::LatP99Us => "serial connect+request+close p99",
            Metric::KeepaliveRps => "keep-alive requests/s",
            Metric::StreamGbps => "one TCP stream",
            Metric::UdpSentPps => "64-byte UDP datagrams sent/s",
            Metric::UdpRecvPps => "64-byte UDP answers received/s",
            Metric::UdpLossPct => "UDP loss",
            Metric::LatSleepsPerReq => "uvs worker sleeps per serial request",
            Metric::UdpCountedPct => "UDP loss uvs counted as drops",
            Metric::UdpSocketLossPct => "UDP loss at the client's and servers' sockets",
            Metric::LoadMs => "load N services",
            Metric::AddMs => "add one service when N exist",
            Metric::RemoveMs => "remove one service when N exist",
            Metric::AnswersRs1 => "TCP answers from rs1",
            Metric::AnswersRs2 => "TCP answers from rs2",
            Metric::Errors => "failed TCP requests",
        }
    }

    /// Whether a correct run can legitimately yield zero (no loss, no
    /// failed request); every other figure must be positive.
    pub fn may_be_zero(self) -> bool {
        matches!(
            self,
            Metric::UdpLossPct
                | Metric::Errors
                | Metric::LatSleepsPerReq
                | Metric::UdpCountedPct
                | Metric::UdpSocketLossPct
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_keys_round_trip() {
        for m in Metric::ALL {
            assert_eq!(Metric::parse(m.key()), Some(m));
        }
    }
}
