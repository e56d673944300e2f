/* Rudder's connection tracking for the per-packet path, instead of nf_conntrack. A translated
 * flow has two entries in rd_ct, each keyed by a packet's tuple exactly as it arrives and holding
 * the rewrite for that direction:
 *   RD_CT_FWD    client -> frontend        becomes (client or node:snat port) -> backend
 *   RD_CT_REPLY  backend -> client or node becomes frontend -> client
 * so every packet after the first costs one lookup and one rewrite. Each entry tracks the TCP
 * state its own direction shows (a SYN, data, a FIN or RST) and expires after the knob's timeout
 * for that state; an expired entry counts as absent. rd_ct is an LRU map: when it is full the
 * oldest flows are evicted, and the agent reports its fill level. */
#ifndef RD_CT_H
#define RD_CT_H

#include "common.h"
#include "lb.h"

#define RD_CT_FWD 0
#define RD_CT_REPLY 1

#define RD_CTS_SYN 0     /* only SYNs seen in this direction */
#define RD_CTS_EST 1     /* data flows (any UDP packet) */
#define RD_CTS_CLOSING 2 /* a FIN or RST seen */

#define RD_CT_F_SNAT (1 << 0) /* the flow is source-NATed to the node */

struct rd_ct_key {
	union rd_addr saddr;
	union rd_addr daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir;
	__u8 pad[2];
};

struct rd_ct_val {
	union rd_addr nat_saddr;
	union rd_addr nat_daddr;
	__be16 nat_sport;
	__be16 nat_dport;
	__u32 rev_nat_id;
	__u64 last_seen_ns;
	__u32 backend_id;
	__u8 state;
	__u8 flags;
	__u16 pad;
};

/* Per-packet ClientIP affinity: the client is its address (socket LB keys by network namespace). */
struct rd_aff_ext_key {
	union rd_addr client;
	__u32 rev_nat_id;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct rd_ct_key);
	__type(value, struct rd_ct_val);
	__uint(max_entries, 262144);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rd_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct rd_aff_ext_key);
	__type(value, struct rd_aff_val);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rd_aff_ext SEC(".maps");

/*
 * The ends of tracked flows: a filter in front of rd_ct, so that a packet no tracked flow can
 * match (most of them: pod-to-pod traffic, the node's own) costs no rd_ct lookup, a cache and TLB
 * miss in a map of this size. A flow has two ends: its frontend (address, port, protocol: the
 * destination of its packets from the client) and its backend (the source of its replies). Each
 * end hashes to one slot of rd_ct_ends, which holds the time (in 2^30 ns units, 0 = never) a flow
 * with that end was last created or refreshed. A packet is looked up in rd_ct only if the slot of
 * the end it would match is younger than the longest CT timeout (rd_knobs.ct_end_window): a live
 * entry is refreshed at most a second before its flow's slots, so it always passes. Collisions
 * only cost a lookup; slots age out by themselves, so nothing ever clears them. Pinned, with rd_ct.
 */
#define RD_CT_ENDS 65536
#define RD_END_FRONTEND 0
#define RD_END_BACKEND 1

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, RD_CT_ENDS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rd_ct_ends SEC(".maps");

static __always_inline __u32 rd_end_now(__u64 now_ns)
{
	return (__u32)(now_ns >> 30) + 1;
}

static __always_inline __u32 rd_end_slot(const union rd_addr *a, __be16 port, __u8 proto, __u8 kind)
{
	__u32 h = (a->w[0] ^ a->w[1] ^ a->w[2]) * 0x9e3779b1;

	h = (h ^ a->w[3]) * 0x85ebca6b;
	h = (h ^ ((__u32)port << 16 | (__u32)proto << 8 | kind)) * 0xc2b2ae35;
	h ^= h >> 16;
	return h & (RD_CT_ENDS - 1);
}

static __always_inline bool rd_end_live(const union rd_addr *a, __be16 port, __u8 proto, __u8 kind, __u32 now)
{
	__u32 i = rd_end_slot(a, port, proto, kind);
	__u32 *t = bpf_map_lookup_elem(&rd_ct_ends, &i);

	return t && *t && now - *t <= rd_knobs.ct_end_window;
}

static __always_inline void rd_end_touch(const union rd_addr *a, __be16 port, __u8 proto, __u8 kind, __u32 now)
{
	__u32 i = rd_end_slot(a, port, proto, kind);
	__u32 *t = bpf_map_lookup_elem(&rd_ct_ends, &i);

	if (t && *t != now && !rd_knobs.dry_run)
		*t = now;
}

/* The per-packet path's clock: CLOCK_MONOTONIC at tick resolution, which costs a read of the
 * timekeeper instead of the clock source's (a TSC read is a large share of a packet's cost in a
 * VM); CT timeouts are seconds. The agent's GC pass (rd_ct_gc) reads the same clock. */
static __always_inline __u64 rd_ct_now(void)
{
	return bpf_ktime_get_coarse_ns();
}

#define RD_TCP_FIN 0x01
#define RD_TCP_SYN 0x02
#define RD_TCP_RST 0x04
#define RD_TCP_ACK 0x10

static __always_inline __u64 rd_ct_timeout_ns(__u8 proto, __u8 state)
{
	__u32 s;

	if (proto != IPPROTO_TCP)
		s = rd_knobs.ct_udp;
	else if (state == RD_CTS_SYN)
		s = rd_knobs.ct_tcp_syn;
	else if (state == RD_CTS_EST)
		s = rd_knobs.ct_tcp_established;
	else
		s = rd_knobs.ct_tcp_closing;
	return (__u64)s * 1000000000ULL;
}

/* The state a packet with these TCP flags leaves its direction in. */
static __always_inline __u8 rd_ct_next_state(__u8 proto, __u8 state, __u8 tcp_flags)
{
	if (proto != IPPROTO_TCP)
		return RD_CTS_EST;
	if (tcp_flags & (RD_TCP_RST | RD_TCP_FIN))
		return RD_CTS_CLOSING;
	if (state == RD_CTS_CLOSING)
		return RD_CTS_CLOSING;
	if ((tcp_flags & RD_TCP_SYN) && !(tcp_flags & RD_TCP_ACK))
		return state;
	return RD_CTS_EST;
}

/* An entry refreshed by another CPU after `now` was read has a negative age: live. */
static __always_inline bool rd_ct_live(const struct rd_ct_val *v, __u8 proto, __u64 now)
{
	__s64 age = (__s64)(now - v->last_seen_ns);

	return age <= (__s64)rd_ct_timeout_ns(proto, v->state);
}

/* Refreshes an entry for a packet of its direction: written at most once a second unless the
 * state changes, so a busy flow does not write its entry on every packet. Returns whether the
 * time was refreshed. */
static __always_inline bool rd_ct_touch(struct rd_ct_val *v, __u8 proto, __u8 tcp_flags, __u64 now)
{
	__u8 next = rd_ct_next_state(proto, v->state, tcp_flags);
	bool refresh = now - v->last_seen_ns > 1000000000ULL;

	if (rd_knobs.dry_run)
		return false;
	if (next != v->state || refresh) {
		v->state = next;
		v->last_seen_ns = now;
	}
	return refresh;
}

/* A packet keeps its whole flow alive, as nf_conntrack's one entry per flow does: the entry of
 * the other direction (keyed by the tuple this entry rewrites to, reversed) is refreshed too, so
 * a flow busy one way only (a stream to a silent client) keeps both its translations, and so are
 * its ends' slots. */
static __always_inline void rd_ct_touch_peer(const struct rd_ct_key *k, const struct rd_ct_val *v, __u64 now)
{
	struct rd_ct_key pk = {
		.saddr = v->nat_daddr, .daddr = v->nat_saddr, .sport = v->nat_dport, .dport = v->nat_sport,
		.proto = k->proto, .dir = k->dir == RD_CT_FWD ? RD_CT_REPLY : RD_CT_FWD,
	};
	struct rd_ct_val *pv = bpf_map_lookup_elem(&rd_ct, &pk);
	__u32 t = rd_end_now(now);

	if (pv && rd_ct_live(pv, k->proto, now))
		pv->last_seen_ns = now;
	/* The flow's ends: the forward entry's key names its frontend and its rewrite the backend; the
	 * reply entry's the other way round. */
	if (k->dir == RD_CT_FWD) {
		rd_end_touch(&k->daddr, k->dport, k->proto, RD_END_FRONTEND, t);
		rd_end_touch(&v->nat_daddr, v->nat_dport, k->proto, RD_END_BACKEND, t);
	} else {
		rd_end_touch(&k->saddr, k->sport, k->proto, RD_END_BACKEND, t);
		rd_end_touch(&v->nat_saddr, v->nat_sport, k->proto, RD_END_FRONTEND, t);
	}
}

#endif
