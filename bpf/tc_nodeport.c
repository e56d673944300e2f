/* The per-packet path: packets that never passed a socket hook on this node (external clients of
 * NodePorts, external IPs, LoadBalancer IPs and off-cluster clients of ClusterIPs) are translated
 * at tc on the node's external interfaces, with Rudder's own connection tracking (lib/ct.h)
 * instead of nf_conntrack:
 *   rd_from_netdev (ingress): the first packet of a flow picks a backend from the same maps as
 *     socket LB, DNATs to it and, for a remote backend where kube-proxy would masquerade, SNATs
 *     to the node with a port of its own; later packets and the replies of remote backends are
 *     rewritten from rd_ct. Translated packets are routed with bpf_fib_lookup and redirected
 *     straight to the outgoing interface, past netfilter, so they create no nf_conntrack entry.
 *   rd_from_pod (ingress of the interfaces local endpoints are routed through): replies of local
 *     backends get the frontend's address back and are redirected out, past netfilter.
 *   rd_to_netdev (egress): the same for replies that reached the external interface through the
 *     stack (a pod interface without rd_from_pod).
 * A frontend without endpoints is refused with ICMP port unreachable, as kube-proxy's REJECT; ICMP
 * errors about a translated flow are translated too (rd_icmp_error), so path MTU discovery works.
 * A local backend keeps the client's address even under eTP=Cluster (its replies pass this node
 * anyway), as Cilium does; kube-proxy masquerades those too.
 *   rd_ct_gc (never attached; the agent runs it with BPF_PROG_TEST_RUN): deletes expired rd_ct
 *     entries and counts the live ones by state. */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/lb.h"
#include "lib/ct.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define RD_SNAT_TRIES 16
/* skb->mark of a packet these programs redirected out of an interface (set only on a packet
 * without a mark): rd_to_netdev, on that interface's egress, lets it pass without a second look
 * and clears the mark. Crossing into another network namespace clears it too. */
#define RD_MARK_FORWARDED 0x52440001

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct rd_trace);
	__uint(max_entries, 1);
} rd_trace SEC(".maps");

/* The trace record of a dry run, else NULL (the live programs write none). */
static __always_inline struct rd_trace *rd_tr(void)
{
	__u32 zero = 0;

	return rd_knobs.dry_run ? bpf_map_lookup_elem(&rd_trace, &zero) : NULL;
}

static __always_inline void rd_note(__u32 step, __u32 reason)
{
	struct rd_trace *t = rd_tr();

	if (t) {
		t->step = step;
		t->reason = reason;
	}
}
#ifndef IPPROTO_ICMPV6
#define IPPROTO_ICMPV6 58
#endif
/* rd_new_flow's answers "refuse this packet" and "translate it to the tuple given back" (the caller
 * does either, keeping the call chain's stack small). */
#define RD_REFUSE 1000
#define RD_TRANSLATE 1001

#define RD_PKT_ICMP 1 /* rd_parse: an ICMP or ICMPv6 packet */

struct rd_pkt {
	union rd_addr saddr;
	union rd_addr daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 v4;
	__u8 tcp_flags;
	__u8 udp_nocsum; /* IPv4 UDP without a checksum: leave it at 0 */
	__u32 l4_off;
};

/* IPv4 without options or IPv6 without extension headers, TCP or UDP, not a fragment: what
 * services carry. Anything else returns -1 and goes to the stack untouched. */
static __always_inline int rd_parse(struct __sk_buff *skb, struct rd_pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return -1;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end || ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)))
			return -1;
		p->v4 = 1;
		rd_addr_v4(&p->saddr, ip->saddr);
		rd_addr_v4(&p->daddr, ip->daddr);
		p->proto = ip->protocol;
		p->l4_off = ETH_HLEN + sizeof(struct iphdr);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end)
			return -1;
		p->v4 = 0;
		__builtin_memcpy(&p->saddr, &ip6->saddr, 16);
		__builtin_memcpy(&p->daddr, &ip6->daddr, 16);
		p->proto = ip6->nexthdr;
		p->l4_off = ETH_HLEN + sizeof(struct ipv6hdr);
	} else {
		return -1;
	}
	if (p->proto == IPPROTO_TCP) {
		struct tcphdr *th = data + p->l4_off;

		if ((void *)(th + 1) > end)
			return -1;
		p->sport = th->source;
		p->dport = th->dest;
		p->tcp_flags = ((__u8 *)th)[13];
	} else if (p->proto == IPPROTO_UDP) {
		struct udphdr *uh = data + p->l4_off;

		if ((void *)(uh + 1) > end)
			return -1;
		p->sport = uh->source;
		p->dport = uh->dest;
		p->udp_nocsum = p->v4 && uh->check == 0;
	} else if (p->proto == (p->v4 ? IPPROTO_ICMP : IPPROTO_ICMPV6)) {
		return RD_PKT_ICMP;
	} else {
		return -1;
	}
	return 0;
}

/* ICMP errors that quote a TCP or UDP packet (destination unreachable, fragmentation needed /
 * packet too big, time exceeded), with the quoted packet's tuple in `q`. */
#define RD_ICMP4_OFF (ETH_HLEN + 20)
#define RD_ICMP6_OFF (ETH_HLEN + 40)

static __always_inline int rd_parse_icmp_error(struct __sk_buff *skb, struct rd_pkt *q, bool v4)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u8 *icmp = data + (v4 ? RD_ICMP4_OFF : RD_ICMP6_OFF);
	__u8 *l4;

	if ((void *)(icmp + 8) > end)
		return -1;
	if (v4 ? (icmp[0] != 3 && icmp[0] != 11) : (icmp[0] < 1 || icmp[0] > 3))
		return -1;
	q->v4 = v4;
	if (v4) {
		struct iphdr *ip = (void *)(icmp + 8);

		if ((void *)(ip + 1) > end || ip->ihl != 5)
			return -1;
		rd_addr_v4(&q->saddr, ip->saddr);
		rd_addr_v4(&q->daddr, ip->daddr);
		q->proto = ip->protocol;
		l4 = (void *)(ip + 1);
	} else {
		struct ipv6hdr *ip6 = (void *)(icmp + 8);

		if ((void *)(ip6 + 1) > end)
			return -1;
		__builtin_memcpy(&q->saddr, &ip6->saddr, 16);
		__builtin_memcpy(&q->daddr, &ip6->daddr, 16);
		q->proto = ip6->nexthdr;
		l4 = (void *)(ip6 + 1);
	}
	if ((q->proto != IPPROTO_TCP && q->proto != IPPROTO_UDP) || (void *)(l4 + 4) > end)
		return -1;
	q->sport = *(__be16 *)l4;
	q->dport = *(__be16 *)(l4 + 2);
	return 0;
}

static __always_inline bool rd_addr_eq(const union rd_addr *a, const union rd_addr *b)
{
	return a->w[0] == b->w[0] && a->w[1] == b->w[1] && a->w[2] == b->w[2] && a->w[3] == b->w[3];
}

/* Rewrites one address (source at IPv4 offset 12 / IPv6 8, destination at 16 / 24), updating the
 * IPv4 header checksum and the L4 checksum's pseudo-header. */
static __noinline int rd_set_addr(struct __sk_buff *skb, const struct rd_pkt *p, const union rd_addr *old,
				       const union rd_addr *new, bool dst)
{
	__u32 csum_off = p->l4_off + (p->proto == IPPROTO_TCP ? 16 : 6);
	__u64 mangled = p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (p->v4) {
		__be32 o = old->w[3], n = new->w[3];

		if (!p->udp_nocsum && bpf_l4_csum_replace(skb, csum_off, o, n, BPF_F_PSEUDO_HDR | mangled | 4))
			return -1;
		if (bpf_l3_csum_replace(skb, ETH_HLEN + 10, o, n, 4))
			return -1;
		return bpf_skb_store_bytes(skb, ETH_HLEN + (dst ? 16 : 12), &n, 4, 0);
	}
	{
		union rd_addr o = *old, n = *new;
		__s64 diff = bpf_csum_diff(o.w, 16, n.w, 16, 0);

		if (diff < 0 || bpf_l4_csum_replace(skb, csum_off, 0, diff, BPF_F_PSEUDO_HDR | mangled))
			return -1;
		return bpf_skb_store_bytes(skb, ETH_HLEN + (dst ? 24 : 8), &n, 16, 0);
	}
}

static __always_inline int rd_set_port(struct __sk_buff *skb, const struct rd_pkt *p, __be16 old, __be16 new, bool dst)
{
	__u32 csum_off = p->l4_off + (p->proto == IPPROTO_TCP ? 16 : 6);
	__u64 mangled = p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (!p->udp_nocsum && bpf_l4_csum_replace(skb, csum_off, old, new, mangled | 2))
		return -1;
	return bpf_skb_store_bytes(skb, p->l4_off + (dst ? 2 : 0), &new, 2, 0);
}

/* A packet's new addresses and ports. */
struct rd_tuple {
	union rd_addr saddr;
	union rd_addr daddr;
	__be16 sport;
	__be16 dport;
};

/* Rewrites the packet's tuple to `t`; updates `p` to match. */
static __noinline int rd_rewrite(struct __sk_buff *skb, struct rd_pkt *p, const struct rd_tuple *t)
{
	if (!rd_addr_eq(&p->saddr, &t->saddr)) {
		if (rd_set_addr(skb, p, &p->saddr, &t->saddr, false))
			return -1;
		p->saddr = t->saddr;
	}
	if (!rd_addr_eq(&p->daddr, &t->daddr)) {
		if (rd_set_addr(skb, p, &p->daddr, &t->daddr, true))
			return -1;
		p->daddr = t->daddr;
	}
	if (p->sport != t->sport) {
		if (rd_set_port(skb, p, p->sport, t->sport, false))
			return -1;
		p->sport = t->sport;
	}
	if (p->dport != t->dport) {
		if (rd_set_port(skb, p, p->dport, t->dport, true))
			return -1;
		p->dport = t->dport;
	}
	return 0;
}

/* Routes a translated packet and hands it to the outgoing interface directly (no netfilter, so no
 * nf_conntrack entry). What the FIB does not forward (local delivery, an expiring TTL, forwarding
 * off) goes to the stack as it is, already translated. */
static __noinline int rd_forward(struct __sk_buff *skb, const struct rd_pkt *p)
{
	struct bpf_fib_lookup fib = {};
	void *data, *end;
	int rc;

	fib.ifindex = skb->ingress_ifindex;
	fib.l4_protocol = p->proto;
	fib.sport = p->sport;
	fib.dport = p->dport;
	fib.tot_len = skb->len - ETH_HLEN;
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	if (p->v4) {
		struct iphdr *ip = data + ETH_HLEN;

		if ((void *)(ip + 1) > end || ip->ttl <= 1)
			return TC_ACT_OK;
		fib.family = AF_INET;
		fib.tos = ip->tos;
		fib.ipv4_src = p->saddr.w[3];
		fib.ipv4_dst = p->daddr.w[3];
	} else {
		struct ipv6hdr *ip6 = data + ETH_HLEN;

		if ((void *)(ip6 + 1) > end || ip6->hop_limit <= 1)
			return TC_ACT_OK;
		fib.family = AF_INET6;
		__builtin_memcpy(fib.ipv6_src, p->saddr.w, 16);
		__builtin_memcpy(fib.ipv6_dst, p->daddr.w, 16);
	}
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return TC_ACT_OK;
	/* Forwarded: one hop less. */
	if (p->v4) {
		__u8 ttl;

		if (bpf_skb_load_bytes(skb, ETH_HLEN + 8, &ttl, 1))
			return TC_ACT_OK;
		{
			__be16 o = bpf_htons((__u16)ttl << 8), n = bpf_htons((__u16)(ttl - 1) << 8);

			ttl--;
			bpf_l3_csum_replace(skb, ETH_HLEN + 10, o, n, 2);
			bpf_skb_store_bytes(skb, ETH_HLEN + 8, &ttl, 1, 0);
		}
	} else {
		__u8 hl;

		if (bpf_skb_load_bytes(skb, ETH_HLEN + 7, &hl, 1))
			return TC_ACT_OK;
		hl--;
		bpf_skb_store_bytes(skb, ETH_HLEN + 7, &hl, 1, 0);
	}
	if (skb->mark == 0)
		skb->mark = RD_MARK_FORWARDED;
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return bpf_redirect_neigh(fib.ifindex, NULL, 0, 0);
	if (bpf_skb_store_bytes(skb, 0, fib.dmac, 6, 0) || bpf_skb_store_bytes(skb, 6, fib.smac, 6, 0))
		return TC_ACT_SHOT;
	return bpf_redirect(fib.ifindex, 0);
}

/* Ones' complement arithmetic on 32-bit words (RFC 1071, RFC 1624): a sum with the end-around
 * carry, and the difference that replacing `old` by `new` makes to a checksum. */
static __always_inline __u32 rd_csum_add(__u32 sum, __u32 v)
{
	sum += v;
	return sum + (sum < v);
}

static __always_inline __u32 rd_csum_repl(__u32 sum, __u32 old, __u32 new)
{
	return rd_csum_add(rd_csum_add(sum, ~old), new);
}

/*
 * Translates an IPv4 packet to `t` and, with `forward`, routes it and hands it to the outgoing
 * interface, in one pass: the route is looked up first, so the new header (TTL, checksum,
 * addresses) is stored at once with its checksum recomputed here, and the L4 checksum gets one
 * update for the addresses (the pseudo-header) and one for the ports. The same packet as
 * rd_rewrite then rd_forward make, with a third of their helper calls. `p` is updated to match.
 */
static __noinline int rd_xlate4(struct __sk_buff *skb, struct rd_pkt *p, const struct rd_tuple *t, bool forward)
{
	struct bpf_fib_lookup fib = {};
	__u8 h[20] __attribute__((aligned(4))); /* the IPv4 header */
	union { __be16 p[2]; __u32 w; } ports = { .p = { t->sport, t->dport } }, old_ports = { .p = { p->sport, p->dport } };
	__u32 csum_off = p->l4_off + (p->proto == IPPROTO_TCP ? 16 : 6);
	__u64 mangled = p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	__be32 os = p->saddr.w[3], od = p->daddr.w[3], ns = t->saddr.w[3], nd = t->daddr.w[3];
	__u32 addr_diff = rd_csum_repl(rd_csum_repl(0, os, ns), od, nd);
	__u32 hsum;
	__u16 word, word2, hc;
	int rc = -1;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, h, 20))
		return TC_ACT_SHOT;
	if (forward && h[8] > 1) {
		fib.family = AF_INET;
		fib.ifindex = skb->ingress_ifindex;
		fib.l4_protocol = p->proto;
		fib.sport = t->sport;
		fib.dport = t->dport;
		fib.tot_len = skb->len - ETH_HLEN;
		fib.tos = h[1];
		fib.ipv4_src = ns;
		fib.ipv4_dst = nd;
		rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
		if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
			rc = -1;
	}
	/* The header: the addresses, and one hop less when this forwards it. */
	__builtin_memcpy(&hc, h + 10, 2);
	hsum = addr_diff;
	if (rc >= 0) {
		__builtin_memcpy(&word, h + 8, 2);
		h[8]--;
		__builtin_memcpy(&word2, h + 8, 2);
		hsum = rd_csum_repl(hsum, word, word2);
	}
	hsum = rd_csum_add(hsum, (__u16)~hc);
	hsum = (hsum & 0xffff) + (hsum >> 16);
	hsum = (hsum & 0xffff) + (hsum >> 16);
	hc = (__u16)~hsum;
	__builtin_memcpy(h + 10, &hc, 2);
	__builtin_memcpy(h + 12, &ns, 4);
	__builtin_memcpy(h + 16, &nd, 4);
	if (!p->udp_nocsum) {
		if ((os != ns || od != nd) && bpf_l4_csum_replace(skb, csum_off, 0, addr_diff, BPF_F_PSEUDO_HDR | mangled))
			return TC_ACT_SHOT;
		if ((p->sport != t->sport || p->dport != t->dport) &&
		    bpf_l4_csum_replace(skb, csum_off, 0, rd_csum_repl(0, old_ports.w, ports.w), mangled))
			return TC_ACT_SHOT;
	}
	if (bpf_skb_store_bytes(skb, ETH_HLEN + 8, h + 8, 12, 0) || bpf_skb_store_bytes(skb, p->l4_off, ports.p, 4, 0))
		return TC_ACT_SHOT;
	p->saddr = t->saddr;
	p->daddr = t->daddr;
	p->sport = t->sport;
	p->dport = t->dport;
	if (rc < 0)
		return TC_ACT_OK;
	if (skb->mark == 0)
		skb->mark = RD_MARK_FORWARDED;
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return bpf_redirect_neigh(fib.ifindex, NULL, 0, 0);
	{
		__u8 mac[12];

		__builtin_memcpy(mac, fib.dmac, 6);
		__builtin_memcpy(mac + 6, fib.smac, 6);
		if (bpf_skb_store_bytes(skb, 0, mac, 12, 0))
			return TC_ACT_SHOT;
	}
	return bpf_redirect(fib.ifindex, 0);
}

/* A packet translated to `t`, then (with `forward`) routed past netfilter. */
static __always_inline int rd_translate(struct __sk_buff *skb, struct rd_pkt *p, const struct rd_tuple *t, bool forward)
{
	if (p->v4)
		return rd_xlate4(skb, p, t, forward);
	if (rd_rewrite(skb, p, t))
		return TC_ACT_SHOT;
	return forward ? rd_forward(skb, p) : TC_ACT_OK;
}

static __always_inline __u16 rd_fold(__s64 csum)
{
	__u32 s = (__u32)csum;

	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

/* Refuses a packet as kube-proxy's REJECT does: ICMP port unreachable to its source, quoting the
 * packet's IP header and the start of its TCP or UDP header, sent back out of the interface it
 * came in on; a TCP client's connect() fails with ECONNREFUSED at once. The quote covers the
 * whole TCP header (20 bytes) or the UDP header: a packet whose checksum the sender left to
 * offload (CHECKSUM_PARTIAL, e.g. from a veth) cannot be cut shorter than its checksum field. */
static __noinline int rd_refuse4(struct __sk_buff *skb, bool tcp)
{
	__u32 w[17] = {}; /* IPv4 header (20), ICMP header (8), the quote (28 or 40) */
	__u8 *b = (__u8 *)w;
	__u8 mac[12];
	__u32 q = tcp ? 40 : 28;

	if (bpf_skb_load_bytes(skb, 0, mac, 12) || bpf_skb_load_bytes(skb, ETH_HLEN, b + 28, q))
		return TC_ACT_SHOT;
	if (bpf_skb_change_tail(skb, ETH_HLEN + q, 0) || bpf_skb_adjust_room(skb, 28, BPF_ADJ_ROOM_MAC, 0))
		return TC_ACT_SHOT;
	b[0] = 0x45;
	b[3] = 28 + q; /* total length */
	b[8] = 64;     /* TTL */
	b[9] = IPPROTO_ICMP;
	__builtin_memcpy(b + 12, b + 28 + 16, 4); /* from the address the client asked for */
	__builtin_memcpy(b + 16, b + 28 + 12, 4); /* to the client */
	b[20] = 3; /* destination unreachable */
	b[21] = 3; /* port unreachable */
	{
		__u16 c = rd_fold(bpf_csum_diff(NULL, 0, w, 20, 0));

		__builtin_memcpy(b + 10, &c, 2);
		c = rd_fold(bpf_csum_diff(NULL, 0, w + 5, 8 + q, 0));
		__builtin_memcpy(b + 22, &c, 2);
	}
	if (bpf_skb_store_bytes(skb, ETH_HLEN, b, 28 + q, 0) || bpf_skb_store_bytes(skb, 0, mac + 6, 6, 0) ||
	    bpf_skb_store_bytes(skb, 6, mac, 6, 0))
		return TC_ACT_SHOT;
	if (skb->mark == 0)
		skb->mark = RD_MARK_FORWARDED;
	return bpf_redirect(skb->ifindex, 0);
}

/* The same for IPv6: ICMPv6 destination unreachable, port unreachable (code 4). */
static __noinline int rd_refuse6(struct __sk_buff *skb, bool tcp)
{
	__u32 w[27] = {}; /* IPv6 header (40), ICMPv6 header (8), the quote (48 or 60) */
	__u32 ph[10] = {}; /* the checksum's pseudo-header: source, destination, length, next header */
	__u8 *b = (__u8 *)w;
	__u8 mac[12];
	__u32 q = tcp ? 60 : 48;

	if (bpf_skb_load_bytes(skb, 0, mac, 12) || bpf_skb_load_bytes(skb, ETH_HLEN, b + 48, q))
		return TC_ACT_SHOT;
	if (bpf_skb_change_tail(skb, ETH_HLEN + q, 0) || bpf_skb_adjust_room(skb, 48, BPF_ADJ_ROOM_MAC, 0))
		return TC_ACT_SHOT;
	b[0] = 0x60;
	b[5] = 8 + q; /* payload length */
	b[6] = 58;    /* ICMPv6 */
	b[7] = 64;    /* hop limit */
	__builtin_memcpy(b + 8, b + 48 + 24, 16);
	__builtin_memcpy(b + 24, b + 48 + 8, 16);
	b[40] = 1; /* destination unreachable */
	b[41] = 4; /* port unreachable */
	__builtin_memcpy(ph, b + 8, 32);
	ph[8] = bpf_htonl(8 + q);
	ph[9] = bpf_htonl(58);
	{
		__u16 c = rd_fold(bpf_csum_diff(NULL, 0, w + 10, 8 + q, bpf_csum_diff(NULL, 0, ph, 40, 0)));

		__builtin_memcpy(b + 42, &c, 2);
	}
	if (bpf_skb_store_bytes(skb, ETH_HLEN, b, 48 + q, 0) || bpf_skb_store_bytes(skb, 0, mac + 6, 6, 0) ||
	    bpf_skb_store_bytes(skb, 6, mac, 6, 0))
		return TC_ACT_SHOT;
	if (skb->mark == 0)
		skb->mark = RD_MARK_FORWARDED;
	return bpf_redirect(skb->ifindex, 0);
}

static __always_inline bool rd_src_range_ok(const union rd_addr *src, __u32 rev_nat_id)
{
	struct rd_src_range_key k = { .prefixlen = 32 + 128, .rev_nat_id = rev_nat_id, .addr = *src };

	return bpf_map_lookup_elem(&rd_src_ranges, &k) != NULL;
}

/* A flow's hash (addresses, ports, protocol): the seed of its backend pick, so Maglev sends one
 * flow to one backend on every node and after a lost CT entry; different flows still spread. */
static __always_inline __u32 rd_flow_hash(const struct rd_pkt *p)
{
	__u32 h = 0x9747b28c ^ p->proto;
	int i;

	for (i = 0; i < 4; i++) {
		h = (h ^ p->saddr.w[i]) * 0x01000193;
		h = (h ^ p->daddr.w[i]) * 0x01000193;
	}
	h = (h ^ (((__u32)p->sport << 16) | p->dport)) * 0x01000193;
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

static __always_inline __u32 rd_pick_ext(const struct rd_svc_key *key, const struct rd_svc_val *master, const struct rd_pkt *p, __u64 now)
{
	__u32 backend_id = 0;

	if (master->flags & RD_F_AFFINITY) {
		struct rd_aff_ext_key ak = { .client = p->saddr, .rev_nat_id = master->rev_nat_id };
		struct rd_aff_val *av = bpf_map_lookup_elem(&rd_aff_ext, &ak);

		if (av && now - av->last_used_ns <= (__u64)master->affinity_timeout * 1000000000ULL) {
			struct rd_aff_match m = { .rev_nat_id = master->rev_nat_id, .backend_id = av->backend_id };

			if (bpf_map_lookup_elem(&rd_aff_match, &m))
				backend_id = av->backend_id;
		}
		if (!backend_id)
			backend_id = rd_pick_backend(key, master, rd_flow_hash(p));
		if (backend_id && !rd_knobs.dry_run) {
			struct rd_aff_val nv = { .last_used_ns = now, .backend_id = backend_id };

			bpf_map_update_elem(&rd_aff_ext, &ak, &nv, BPF_ANY);
		}
		return backend_id;
	}
	return rd_pick_backend(key, master, rd_flow_hash(p));
}

/*
 * Picks the source port of a flow masqueraded to the node and reserves it: the reply entry `ck`
 * (its dport the client's port on entry) is inserted only if no other flow's reply tuple is
 * (node, port) -> (backend, port), so ports are unique per backend, as netfilter's NAT makes them.
 * The client's own port is tried first, then random ones from the knobs' range, leaving out the
 * node's ephemeral range (its own connections pick ports there, unseen by these maps). A port
 * whose flow has expired is taken over. Returns 0 with ck->dport set, -1 when every try failed.
 */
static __noinline int rd_snat_reserve(struct rd_ct_key *ck, const struct rd_ct_val *cv, __u64 now)
{
	__u32 lo = rd_knobs.snat_port_min, hi = rd_knobs.snat_port_max;
	__u32 slo = rd_knobs.snat_skip_min, shi = rd_knobs.snat_skip_max;
	__u32 skip = (slo > 0 && slo >= lo && shi >= slo && shi <= hi) ? shi - slo + 1 : 0;
	__u32 span, port = bpf_ntohs(ck->dport);
	int i;

	if (hi < lo)
		return -1;
	span = hi - lo + 1 - skip;
	if (span == 0 || span > 65536)
		return -1;
	for (i = 0; i < RD_SNAT_TRIES; i++) {
		struct rd_ct_val *old;

		if (i > 0 || port < lo || port > hi || (skip && port >= slo && port <= shi)) {
			port = lo + bpf_get_prandom_u32() % span;
			if (skip && port >= slo)
				port += skip;
		}
		ck->dport = bpf_htons((__u16)port);
		if (rd_knobs.dry_run) {
			old = bpf_map_lookup_elem(&rd_ct, ck);
			if (!old || !rd_ct_live(old, ck->proto, now))
				return 0;
			continue;
		}
		if (bpf_map_update_elem(&rd_ct, ck, cv, BPF_NOEXIST) == 0)
			return 0;
		old = bpf_map_lookup_elem(&rd_ct, ck);
		if (old && !rd_ct_live(old, ck->proto, now) && bpf_map_update_elem(&rd_ct, ck, cv, BPF_EXIST) == 0)
			return 0;
	}
	return -1;
}

/* The first packet of a flow to a frontend: verdict, backend, NAT and both CT entries; the
 * packet's new tuple in `out` when the answer is RD_TRANSLATE. `from_pod`: a local pod's own
 * connection (socket LB limited to the host namespace), which takes the pods' path (SCOPE_INT)
 * and is masqueraded only when it reaches itself. */
static __noinline int rd_new_flow(struct __sk_buff *skb, struct rd_pkt *p, const struct rd_config *cfg, struct rd_tuple *out, bool from_pod)
{
	struct rd_svc_key key = { .addr = p->daddr, .port = p->dport, .proto = p->proto, .scope = from_pod ? RD_SCOPE_INT : RD_SCOPE_EXT };
	const struct rd_svc_val *master;
	const struct rd_backend *be;
	struct rd_ct_key ck = {};
	struct rd_ct_val cv = {};
	union rd_addr vip = p->daddr, client = p->saddr, nat_src = p->saddr;
	__be16 vport = p->dport, cport = p->sport, nat_sport = p->sport;
	__u64 now = rd_ct_now();
	__u32 backend_id, rev_nat_id;
	__u16 flags;
	bool snat, fallback = false;

	master = bpf_map_lookup_elem(&rd_services, &key);
	if (!master && !from_pod) {
		/* No external entry: the external path is the pods' one, masqueraded as off-cluster
		 * traffic is (kube-proxy: `! -s clusterCIDR -j KUBE-MARK-MASQ`) where the node says so. */
		key.scope = RD_SCOPE_INT;
		master = bpf_map_lookup_elem(&rd_services, &key);
		fallback = true;
	}
	if (!master) {
		/* A ClusterIP on a port no service uses: refused, as socket LB does. */
		struct rd_svc_key any = { .addr = p->daddr, .scope = RD_SCOPE_INT };

		if (bpf_map_lookup_elem(&rd_services, &any)) {
			rd_note(RD_TR_NEW_FLOW, RD_TRR_NO_ENDPOINTS);
			return RD_REFUSE;
		}
		rd_note(RD_TR_NO_FRONTEND, 0);
		return TC_ACT_OK;
	}
	flags = master->flags;
	/* A pod's own connection is masqueraded only when it reaches itself (below). */
	if (from_pod || fallback)
		flags &= ~RD_F_MASQ;
	if (fallback && (cfg->flags & (p->v4 ? RD_CFG_MASQ_OFF_CLUSTER4 : RD_CFG_MASQ_OFF_CLUSTER6)))
		flags |= RD_F_MASQ;
	rev_nat_id = master->rev_nat_id;
	{
		struct rd_trace *t = rd_tr();

		if (t) {
			t->step = RD_TR_NEW_FLOW;
			t->rev_nat_id = rev_nat_id;
			t->flags = flags;
			t->scope = key.scope;
		}
	}
	if (flags & RD_F_LOOPBACK) {
		rd_note(RD_TR_NEW_FLOW, RD_TRR_LOOPBACK);
		return TC_ACT_OK;
	}
	if ((flags & RD_F_SRC_RANGE) && !rd_src_range_ok(&p->saddr, rev_nat_id)) {
		rd_count(rev_nat_id, 2);
		rd_note(RD_TR_NEW_FLOW, RD_TRR_SRC_RANGE);
		return TC_ACT_SHOT;
	}
	if (flags & RD_F_DROP) {
		rd_count(rev_nat_id, 2);
		rd_note(RD_TR_NEW_FLOW, RD_TRR_POLICY);
		return TC_ACT_SHOT;
	}
	if ((flags & RD_F_REJECT) || master->count == 0) {
		rd_count(rev_nat_id, 1);
		rd_note(RD_TR_NEW_FLOW, RD_TRR_NO_ENDPOINTS);
		return RD_REFUSE;
	}
	backend_id = rd_pick_ext(&key, master, p, now);
	be = backend_id ? bpf_map_lookup_elem(&rd_backends, &backend_id) : NULL;
	if (!be) {
		rd_count(rev_nat_id, 1);
		rd_note(RD_TR_NEW_FLOW, RD_TRR_NO_BACKEND);
		return TC_ACT_SHOT;
	}
	/* Hairpin: a backend reaching its own frontend through this node is masqueraded wherever it
	 * runs, or it would answer itself. */
	snat = ((flags & RD_F_MASQ) && !(be->flags & RD_BE_LOCAL)) || rd_addr_eq(&be->addr, &client);
	{
		struct rd_trace *t = rd_tr();

		if (t) {
			t->backend_id = backend_id;
			t->snat = snat;
		}
	}

	/* The reply entry first: with SNAT it is the reservation of the port. */
	ck.saddr = be->addr;
	ck.sport = be->port;
	ck.proto = p->proto;
	ck.dir = RD_CT_REPLY;
	cv.nat_saddr = vip;
	cv.nat_sport = vport;
	cv.nat_daddr = client;
	cv.nat_dport = cport;
	cv.rev_nat_id = rev_nat_id;
	cv.backend_id = backend_id;
	cv.last_seen_ns = now;
	cv.state = RD_CTS_SYN;
	if (snat) {
		nat_src = p->v4 ? cfg->node_ip4 : cfg->node_ip6;
		if (rd_addr_is_zero(&nat_src)) {
			rd_note(RD_TR_NEW_FLOW, RD_TRR_NO_NODE_IP);
			return TC_ACT_SHOT;
		}
		ck.daddr = nat_src;
		ck.dport = cport;
		cv.flags = RD_CT_F_SNAT;
		if (rd_snat_reserve(&ck, &cv, now)) {
			rd_count(rev_nat_id, 2);
			rd_note(RD_TR_NEW_FLOW, RD_TRR_NO_SNAT_PORT);
			return TC_ACT_SHOT;
		}
		nat_sport = ck.dport;
	} else {
		ck.daddr = client;
		ck.dport = cport;
		if (!rd_knobs.dry_run)
			bpf_map_update_elem(&rd_ct, &ck, &cv, BPF_ANY);
	}

	ck.saddr = client;
	ck.daddr = vip;
	ck.sport = cport;
	ck.dport = vport;
	ck.dir = RD_CT_FWD;
	cv.nat_saddr = nat_src;
	cv.nat_sport = nat_sport;
	cv.nat_daddr = be->addr;
	cv.nat_dport = be->port;
	cv.state = rd_ct_next_state(p->proto, RD_CTS_SYN, p->tcp_flags);
	if (!rd_knobs.dry_run) {
		struct rd_be_stats *bs = bpf_map_lookup_elem(&rd_be_stats, &backend_id);
		__u32 t = rd_end_now(now);

		bpf_map_update_elem(&rd_ct, &ck, &cv, BPF_ANY);
		rd_end_touch(&vip, vport, p->proto, RD_END_FRONTEND, t);
		rd_end_touch(&be->addr, be->port, p->proto, RD_END_BACKEND, t);
		if (bs)
			bs->connects++;
	}
	rd_count(rev_nat_id, 0);
	rd_note(RD_TR_NEW_FLOW, RD_TRR_FORWARD);
	out->saddr = nat_src;
	out->sport = nat_sport;
	out->daddr = be->addr;
	out->dport = be->port;
	return RD_TRANSLATE;
}

/* A packet of a tracked flow in direction `dir`: rewritten from its entry. Returns -1 if untracked. */
static __noinline int rd_tracked(struct __sk_buff *skb, struct rd_pkt *p, __u8 dir, bool forward)
{
	struct rd_ct_key k = { .saddr = p->saddr, .daddr = p->daddr, .sport = p->sport, .dport = p->dport, .proto = p->proto, .dir = dir };
	struct rd_ct_val *v = bpf_map_lookup_elem(&rd_ct, &k);
	struct rd_tuple t;
	__u64 now;

	if (!v)
		return -1;
	now = rd_ct_now();
	if (!rd_ct_live(v, p->proto, now))
		return -1;
	if (rd_ct_touch(v, p->proto, p->tcp_flags, now))
		rd_ct_touch_peer(&k, v, now);
	{
		struct rd_trace *tr = rd_tr();

		if (tr) {
			tr->step = dir == RD_CT_FWD ? RD_TR_TRACKED_FWD : RD_TR_TRACKED_REPLY;
			tr->reason = RD_TRR_FORWARD;
			tr->rev_nat_id = v->rev_nat_id;
			tr->backend_id = v->backend_id;
			tr->snat = !!(v->flags & RD_CT_F_SNAT);
		}
	}
	t.saddr = v->nat_saddr;
	t.daddr = v->nat_daddr;
	t.sport = v->nat_sport;
	t.dport = v->nat_dport;
	return rd_translate(skb, p, &t, forward);
}

/* One address inside an ICMP error (the outer header's or the quoted packet's) rewritten, with
 * every checksum that covers it: the outer IPv4 header's, the quoted IPv4 header's (which keeps
 * the ICMP checksum's sum over it unchanged) or, for IPv6, the ICMPv6 checksum (with the
 * pseudo-header for outer addresses). */
static __always_inline int rd_icmp_set_addr(struct __sk_buff *skb, bool v4, __u32 off, const union rd_addr *old,
				       const union rd_addr *new, __u32 ip_csum_off)
{
	if (v4) {
		__be32 o = old->w[3], n = new->w[3];

		if (bpf_l3_csum_replace(skb, ip_csum_off, o, n, 4))
			return -1;
		return bpf_skb_store_bytes(skb, off, &n, 4, 0);
	}
	{
		union rd_addr o = *old, n = *new;
		__s64 diff = bpf_csum_diff(o.w, 16, n.w, 16, 0);
		/* ip_csum_off 0 marks the quoted header (plain data), else the outer (pseudo-header). */
		__u64 f = ip_csum_off ? BPF_F_PSEUDO_HDR : 0;

		if (diff < 0 || bpf_l4_csum_replace(skb, RD_ICMP6_OFF + 2, 0, diff, f))
			return -1;
		return bpf_skb_store_bytes(skb, off, &n, 16, 0);
	}
}

static __always_inline int rd_icmp_set_port(struct __sk_buff *skb, bool v4, __u32 off, __be16 old, __be16 new)
{
	if (old == new)
		return 0;
	if (bpf_l4_csum_replace(skb, (v4 ? RD_ICMP4_OFF : RD_ICMP6_OFF) + 2, old, new, 2))
		return -1;
	return bpf_skb_store_bytes(skb, off, &new, 2, 0);
}

/*
 * An ICMP error about a translated flow, translated like the flow's own packets so that it
 * reaches the other end: about a packet this node sent to a backend (the quote is the
 * translated packet: its reply entry names the flow), to the client, with the quote and the
 * addresses the client knows (frontend, its own); about a reply the client got (the quote is
 * frontend -> client: its forward entry), to the backend. So path MTU discovery and refusals
 * work through the translation. Returns -1 if the error is about no tracked flow.
 */
static __noinline int rd_icmp_error(struct __sk_buff *skb, const struct rd_pkt *outer, bool forward)
{
	struct rd_pkt q = {};
	struct rd_ct_key k = {};
	struct rd_ct_val *v;
	bool v4 = outer->v4, to_client;
	__u32 in_ip = v4 ? RD_ICMP4_OFF + 8 : RD_ICMP6_OFF + 8;
	__u32 in_l4 = in_ip + (v4 ? 20 : 40);
	__u32 in_src = in_ip + (v4 ? 12 : 8), in_dst = in_ip + (v4 ? 16 : 24);
	__u32 out_src = ETH_HLEN + (v4 ? 12 : 8), out_dst = ETH_HLEN + (v4 ? 16 : 24);
	union rd_addr new_in_src, new_in_dst, new_out_dst;
	__be16 new_in_sport, new_in_dport;

	if (rd_parse_icmp_error(skb, &q, v4))
		return -1;
	rd_note(RD_TR_ICMP, 0);
	/* The quoted packet's reverse is a packet of the flow as it arrives. */
	k.saddr = q.daddr;
	k.daddr = q.saddr;
	k.sport = q.dport;
	k.dport = q.sport;
	k.proto = q.proto;
	k.dir = RD_CT_REPLY;
	v = bpf_map_lookup_elem(&rd_ct, &k);
	to_client = v != NULL;
	if (!v) {
		k.dir = RD_CT_FWD;
		v = bpf_map_lookup_elem(&rd_ct, &k);
		if (!v)
			return -1;
	}
	/* The entry rewrites packets of its direction; the quote travelled the other way, so it
	 * becomes what the entry's own end sent: for a reply entry, client -> frontend (the error goes
	 * to the client); for a forward entry, backend -> (node or client) (it goes to the backend). */
	new_in_src = v->nat_daddr;
	new_in_sport = v->nat_dport;
	new_in_dst = v->nat_saddr;
	new_in_dport = v->nat_sport;
	new_out_dst = v->nat_daddr;
	if (rd_icmp_set_addr(skb, v4, in_src, &q.saddr, &new_in_src, v4 ? in_ip + 10 : 0) ||
	    rd_icmp_set_addr(skb, v4, in_dst, &q.daddr, &new_in_dst, v4 ? in_ip + 10 : 0) ||
	    rd_icmp_set_port(skb, v4, in_l4, q.sport, new_in_sport) ||
	    rd_icmp_set_port(skb, v4, in_l4 + 2, q.dport, new_in_dport))
		return TC_ACT_SHOT;
	/* An error the backend itself sent comes from the frontend, as the client knows it. */
	if (to_client && rd_addr_eq(&outer->saddr, &q.daddr) &&
	    rd_icmp_set_addr(skb, v4, out_src, &outer->saddr, &new_in_dst, ETH_HLEN + 10))
		return TC_ACT_SHOT;
	if (!rd_addr_eq(&outer->daddr, &new_out_dst) && rd_icmp_set_addr(skb, v4, out_dst, &outer->daddr, &new_out_dst, ETH_HLEN + 10))
		return TC_ACT_SHOT;
	if (!forward)
		return TC_ACT_OK;
	{
		struct rd_pkt f = *outer;

		f.saddr = to_client && rd_addr_eq(&outer->saddr, &q.daddr) ? new_in_dst : outer->saddr;
		f.daddr = new_out_dst;
		f.proto = v4 ? IPPROTO_ICMP : IPPROTO_ICMPV6;
		f.sport = 0;
		f.dport = 0;
		return rd_forward(skb, &f);
	}
}

static __always_inline bool rd_pure_syn(const struct rd_pkt *p)
{
	return p->proto == IPPROTO_TCP && (p->tcp_flags & (RD_TCP_SYN | RD_TCP_ACK | RD_TCP_RST)) == RD_TCP_SYN;
}

/* Whether a packet can be a tracked flow's reply: its source is a live backend end. */
static __always_inline bool rd_reply_end_live(const struct rd_pkt *p, __u32 now)
{
	return !rd_pure_syn(p) && rd_end_live(&p->saddr, p->sport, p->proto, RD_END_BACKEND, now);
}

/* A new flow's first packet: translated and forwarded, refused, or left as rd_new_flow says. */
static __always_inline int rd_open_flow(struct __sk_buff *skb, struct rd_pkt *p, const struct rd_config *cfg, bool from_pod)
{
	struct rd_tuple t;
	int r = rd_new_flow(skb, p, cfg, &t, from_pod);

	if (r == RD_TRANSLATE)
		return rd_translate(skb, p, &t, true);
	if (r == RD_REFUSE)
		return p->v4 ? rd_refuse4(skb, p->proto == IPPROTO_TCP) : rd_refuse6(skb, p->proto == IPPROTO_TCP);
	return r;
}

SEC("tc")
int rd_from_netdev(struct __sk_buff *skb)
{
	struct rd_pkt p = {};
	int r = rd_parse(skb, &p);
	__u32 zero = 0, now;
	const struct rd_config *cfg;

	if (r < 0)
		return TC_ACT_OK;
	if (r == RD_PKT_ICMP) {
		r = rd_icmp_error(skb, &p, true);
		return r >= 0 ? r : TC_ACT_OK;
	}
	/* Written by the agent's first sync; nothing is translated before it. */
	cfg = bpf_map_lookup_elem(&rd_config_map, &zero);
	if (!cfg)
		return TC_ACT_OK;
	now = rd_end_now(rd_ct_now());
	if (rd_end_live(&p.daddr, p.dport, p.proto, RD_END_FRONTEND, now)) {
		r = rd_tracked(skb, &p, RD_CT_FWD, true);
		if (r >= 0)
			return r;
	}
	/* Replies of remote backends: only masqueraded flows' come back here, to the node's address
	 * (the others go from the backend's node to the client), so other packets skip the lookup;
	 * so does a TCP SYN, never a reply. With socket LB limited to the host namespace, the
	 * replies to local pods' own connections come back here too, to the pods. */
	if ((rd_knobs.host_ns_only || rd_addr_eq(&p.daddr, p.v4 ? &cfg->node_ip4 : &cfg->node_ip6)) && rd_reply_end_live(&p, now)) {
		r = rd_tracked(skb, &p, RD_CT_REPLY, true);
		if (r >= 0)
			return r;
	}
	/* Only a TCP SYN (or any UDP datagram) opens a flow: every other packet of an untracked
	 * flow, most of them not for a frontend at all (pod-to-pod traffic across nodes), goes to
	 * the stack without a frontend lookup. A mid-stream packet of a flow whose entry is gone
	 * would have been sent to a new backend, which resets it: the node's stack does the same. */
	if (p.proto == IPPROTO_TCP && !rd_pure_syn(&p)) {
		rd_note(RD_TR_NO_FRONTEND, 0);
		return TC_ACT_OK;
	}
	return rd_open_flow(skb, &p, cfg, false);
}

/* On the interfaces facing this node's pods (ingress: what pods send): replies of local backends
 * get the frontend's address back and go straight out, past netfilter, like every other
 * translated packet. With socket LB limited to the host namespace (rd_knobs.host_ns_only), the
 * pods' own connections to frontends are translated here too, as at connect() otherwise. */
SEC("tc")
int rd_from_pod(struct __sk_buff *skb)
{
	struct rd_pkt p = {};
	int r = rd_parse(skb, &p);
	const struct rd_config *cfg;
	__u32 zero = 0, now;

	if (r < 0)
		return TC_ACT_OK;
	if (r == RD_PKT_ICMP) {
		r = rd_icmp_error(skb, &p, true);
		return r >= 0 ? r : TC_ACT_OK;
	}
	now = rd_end_now(rd_ct_now());
	if (rd_reply_end_live(&p, now)) {
		r = rd_tracked(skb, &p, RD_CT_REPLY, true);
		if (r >= 0)
			return r;
	}
	if (!rd_knobs.host_ns_only)
		return TC_ACT_OK;
	if (rd_end_live(&p.daddr, p.dport, p.proto, RD_END_FRONTEND, now)) {
		r = rd_tracked(skb, &p, RD_CT_FWD, true);
		if (r >= 0)
			return r;
	}
	if (p.proto == IPPROTO_TCP && !rd_pure_syn(&p))
		return TC_ACT_OK;
	cfg = bpf_map_lookup_elem(&rd_config_map, &zero);
	if (!cfg)
		return TC_ACT_OK;
	return rd_open_flow(skb, &p, cfg, true);
}

SEC("tc")
int rd_to_netdev(struct __sk_buff *skb)
{
	struct rd_pkt p = {};
	int r;

	/* Already translated and sent here by one of these programs. */
	if (skb->mark == RD_MARK_FORWARDED) {
		skb->mark = 0;
		return TC_ACT_OK;
	}
	r = rd_parse(skb, &p);
	if (r < 0)
		return TC_ACT_OK;
	/* Replies of local backends (and their ICMP errors), on their way back to the client. */
	if (r == RD_PKT_ICMP)
		r = rd_icmp_error(skb, &p, false);
	else if (rd_reply_end_live(&p, rd_end_now(rd_ct_now())))
		r = rd_tracked(skb, &p, RD_CT_REPLY, false);
	return r >= 0 ? r : TC_ACT_OK;
}

/* What one garbage collection pass saw, returned in skb->cb[0..3]. */
struct rd_gc {
	__u64 now;
	__u32 deleted;
	__u32 live[3]; /* by state: RD_CTS_SYN, RD_CTS_EST, RD_CTS_CLOSING */
};

static long rd_gc_one(struct bpf_map *map, const struct rd_ct_key *k, const struct rd_ct_val *v, struct rd_gc *gc)
{
	if (!rd_ct_live(v, k->proto, gc->now) && !rd_knobs.dry_run) {
		/* Checked and deleted in one pass in the kernel: no window in which a flow that took the
		 * tuple over meanwhile could be deleted, as a dump-then-delete from user space has. */
		if (bpf_map_delete_elem(map, k) == 0)
			gc->deleted++;
		return 0;
	}
	gc->live[v->state < 2 ? v->state : 2]++;
	return 0;
}

SEC("tc")
int rd_ct_gc(struct __sk_buff *skb)
{
	struct rd_gc gc = { .now = rd_ct_now() };

	bpf_for_each_map_elem(&rd_ct, rd_gc_one, &gc, 0);
	skb->cb[0] = gc.deleted;
	skb->cb[1] = gc.live[0];
	skb->cb[2] = gc.live[1];
	skb->cb[3] = gc.live[2];
	return TC_ACT_OK;
}
