// SPDX-License-Identifier: GPL-2.0
/* socket.bpf.c - a socket filter returning a length from the packet.
 *
 * SEC("socket") = BPF_PROG_TYPE_SOCKET_FILTER. Socket filters cannot read
 * skb->data directly; the program uses bpf_skb_load_bytes(). The return
 * value is how many bytes of the packet to keep (0 = drop).
 * In BPF_PROG_TEST_RUN (like on a socket) the Ethernet header is already
 * pulled: offset 0 is the IP header and skb->len = frame length - 14.
 *
 * Returns: IPv4 -> the header's total length (network order field,
 *          converted); anything else -> skb->len; unreadable -> 0.
 * Documented inputs (tests/progs/expected.json, "socket"):
 *   62-byte frame: Ethernet + IPv4 (tot_len 48) + UDP + 20 bytes   -> 48
 *   IPv4 frame of 62 bytes whose tot_len says 1500                -> 1500
 *   74-byte frame: Ethernet + IPv6 + UDP + 12 bytes               -> 60
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

SEC("socket")
int socket_len(struct __sk_buff *skb)
{
	struct iphdr iph;

	if (bpf_skb_load_bytes(skb, 0, &iph, sizeof(iph)) < 0)
		return 0;
	if (iph.version != 4)
		return skb->len;
	return bpf_ntohs(iph.tot_len);
}

char LICENSE[] SEC("license") = "GPL";
