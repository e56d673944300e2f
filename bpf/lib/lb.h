/* Service lookup and backend selection for socket-level load balancing: the frontend's master
 * entry decides the verdict, then affinity, Maglev or a random slot picks the backend. Shared by
 * the IPv4 and IPv6 hooks (addresses are 16 bytes in every map). */
#ifndef RD_LB_H
#define RD_LB_H

#include "common.h"
#include "maps.h"

/* Set by the loader before load: read-only data, so the verifier sees constants. */
const volatile struct rd_knobs rd_knobs = { .maglev_m = 16381 };

/* What rd_xlate decided. */
#define RD_PASS 0       /* not a service address (or not ours to translate here): leave it */
#define RD_XLATED 1     /* dst/port now name the backend */

static __always_inline const struct rd_svc_val *rd_lookup_master(struct rd_svc_key *key, bool host_ns)
{
	const struct rd_svc_val *v;

	key->slot = 0;
	if (host_ns) {
		key->scope = RD_SCOPE_HOST;
		v = bpf_map_lookup_elem(&rd_services, key);
		if (v)
			return v;
	}
	key->scope = RD_SCOPE_INT;
	v = bpf_map_lookup_elem(&rd_services, key);
	if (v)
		return v;
	key->scope = RD_SCOPE_EXT;
	return bpf_map_lookup_elem(&rd_services, key);
}

static __always_inline void rd_count(__u32 rev_nat_id, int what)
{
	struct rd_svc_stats *s;

	if (rd_knobs.dry_run)
		return;
	s = bpf_map_lookup_elem(&rd_svc_stats, &rev_nat_id);

	if (!s)
		return;
	if (what == 0)
		s->connects++;
	else if (what == 1)
		s->refused++;
	else
		s->dropped++;
}

/* Source ranges: the socket's bound source, or for the host namespace the node's primary address
 * (what the kernel will pick); unknown sources (pods with unbound sockets) are left to the
 * per-packet path, which sees the real source. Returns 1 allowed, 0 denied, -1 unknown. */
static __always_inline int rd_src_allowed(const union rd_addr *src, __u32 rev_nat_id, bool host_ns, bool v4)
{
	struct rd_src_range_key k = { .prefixlen = 32 + 128, .rev_nat_id = rev_nat_id };
	__u32 zero = 0;

	if (!rd_addr_is_zero(src)) {
		k.addr = *src;
	} else if (host_ns) {
		const struct rd_config *cfg = bpf_map_lookup_elem(&rd_config_map, &zero);

		if (!cfg)
			return -1;
		k.addr = v4 ? cfg->node_ip4 : cfg->node_ip6;
		if (rd_addr_is_zero(&k.addr))
			return -1;
	} else {
		return -1;
	}
	return bpf_map_lookup_elem(&rd_src_ranges, &k) ? 1 : 0;
}

/* `seed` picks the slot: random per TCP connection; per socket for UDP, so an unconnected socket
 * keeps talking to one backend, as its conntrack entry keeps it under kube-proxy. */
static __always_inline __u32 rd_pick_backend(const struct rd_svc_key *master_key, const struct rd_svc_val *master, __u32 seed)
{
	struct rd_svc_key key = *master_key;
	const struct rd_svc_val *slot;
	__u32 count = master->count;

	if (master->flags & RD_F_MAGLEV) {
		__u32 id = master->rev_nat_id;
		const __u32 *table = bpf_map_lookup_elem(&rd_maglev, &id);
		__u32 m = rd_knobs.maglev_m;

		if (table && m > 0) {
			__u32 idx = seed % m;

			/* The verifier does not bound a remainder: compare with the table size (a constant
			 * to it) in a way the compiler cannot drop as redundant. */
			asm volatile("" : "+r"(idx));
			if (idx < m) {
				__u32 be = table[idx];

				if (be)
					return be;
			}
		}
	}
	key.slot = (seed % count) + 1;
	slot = bpf_map_lookup_elem(&rd_services, &key);
	return slot ? slot->backend_id : 0;
}

/* Translates a connection to (dst, port, proto) at connect()/sendmsg(). Returns RD_PASS,
 * RD_XLATED (dst and port rewritten, rev_sk entry written), or a negative errno for the syscall. */
static __always_inline int rd_xlate(void *ctx, union rd_addr *dst, __be16 *port, __u8 proto,
				    const union rd_addr *src, bool v4)
{
	struct rd_svc_key key = {};
	const struct rd_svc_val *master;
	const struct rd_backend *be;
	__u64 netns = bpf_get_netns_cookie(ctx);
	bool host_ns = netns == rd_knobs.host_netns_cookie;
	__u32 backend_id = 0, rev_nat_id;
	__u32 seed = proto == IPPROTO_UDP ? (__u32)bpf_get_socket_cookie(ctx) * 2654435761U : bpf_get_prandom_u32();
	__u16 flags;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return RD_PASS;
	if (rd_knobs.host_ns_only && !host_ns)
		return RD_PASS;

	key.addr = *dst;
	key.port = *port;
	key.proto = proto;
	master = rd_lookup_master(&key, host_ns);
	if (!master) {
		/* A ClusterIP on a port no service uses: refused rather than left to time out. */
		struct rd_svc_key any = { .addr = *dst, .scope = RD_SCOPE_INT };

		if (bpf_map_lookup_elem(&rd_services, &any))
			return -RD_ECONNREFUSED;
		return RD_PASS;
	}
	flags = master->flags;
	rev_nat_id = master->rev_nat_id;
	if ((flags & RD_F_LOOPBACK) && !host_ns)
		return RD_PASS;
	if (flags & RD_F_SRC_RANGE) {
		int ok = rd_src_allowed(src, rev_nat_id, host_ns, v4);

		if (ok < 0)
			return RD_PASS;
		/* Outside loadBalancerSourceRanges: refused as a firewall would, "operation not permitted". */
		if (ok == 0) {
			rd_count(rev_nat_id, 2);
			return -RD_EPERM;
		}
	}
	/* kube-proxy drops these packets; a socket can be told at once. As Cilium does, the
	 * application sees "no route to host" rather than waiting for its connect timeout. */
	if (flags & RD_F_DROP) {
		rd_count(rev_nat_id, 2);
		return -RD_EHOSTUNREACH;
	}
	if (flags & RD_F_REJECT || master->count == 0) {
		rd_count(rev_nat_id, 1);
		return -RD_ECONNREFUSED;
	}

	if (flags & RD_F_AFFINITY) {
		struct rd_aff_key ak = { .client = netns, .rev_nat_id = rev_nat_id };
		struct rd_aff_val *av = bpf_map_lookup_elem(&rd_affinity, &ak);
		__u64 now = bpf_ktime_get_ns();

		if (av && now - av->last_used_ns <= (__u64)master->affinity_timeout * 1000000000ULL) {
			struct rd_aff_match m = { .rev_nat_id = rev_nat_id, .backend_id = av->backend_id };

			if (bpf_map_lookup_elem(&rd_aff_match, &m))
				backend_id = av->backend_id;
		}
		if (!backend_id)
			backend_id = rd_pick_backend(&key, master, seed);
		if (backend_id) {
			struct rd_aff_val nv = { .last_used_ns = now, .backend_id = backend_id };

			bpf_map_update_elem(&rd_affinity, &ak, &nv, BPF_ANY);
		}
	} else {
		backend_id = rd_pick_backend(&key, master, seed);
	}
	be = backend_id ? bpf_map_lookup_elem(&rd_backends, &backend_id) : NULL;
	if (!be) {
		/* A slot points at a backend being replaced: refuse rather than send it nowhere. */
		rd_count(rev_nat_id, 1);
		return -RD_ECONNREFUSED;
	}

	{
		struct rd_sk_key sk = { .cookie = bpf_get_socket_cookie(ctx), .addr = be->addr, .port = be->port };
		struct rd_sk_val sv = { .addr = *dst, .port = *port, .rev_nat_id = rev_nat_id };

		bpf_map_update_elem(&rd_rev_sk, &sk, &sv, BPF_ANY);
	}
	rd_count(rev_nat_id, 0);
	{
		struct rd_be_stats *bs = bpf_map_lookup_elem(&rd_be_stats, &backend_id);

		if (bs)
			bs->connects++;
	}
	*dst = be->addr;
	*port = be->port;
	return RD_XLATED;
}

/* The service address a translated socket's peer should appear as, or NULL. */
static __always_inline const struct rd_sk_val *rd_rev_lookup(void *ctx, const union rd_addr *peer, __be16 port)
{
	struct rd_sk_key sk = { .cookie = bpf_get_socket_cookie(ctx), .addr = *peer, .port = port };

	return bpf_map_lookup_elem(&rd_rev_sk, &sk);
}

#endif
