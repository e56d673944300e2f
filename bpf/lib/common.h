/* Shared types and constants of Rudder's BPF programs. Compiled with clang -target bpf against a
 * vmlinux.h generated from the running kernel's BTF (CO-RE). Every struct here has a TypeScript
 * codec in src/dataplane/ebpf/codecs.ts; a test compares both with this object's BTF, so change
 * them together. Addresses are 16 bytes in every map: IPv4 as ::ffff:a.b.c.d, so one layout
 * serves both families. Ports and addresses are in network byte order, everything else in host
 * order. */
#ifndef RD_COMMON_H
#define RD_COMMON_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define RD_SYS_REJECT 0
#define RD_SYS_PROCEED 1

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif
#define RD_ECONNREFUSED 111
#define RD_EPERM 1
#define RD_EHOSTUNREACH 113

/* Key scopes: what socket-level (node-originated) and per-packet (external) traffic get can
 * differ (traffic policy Local). The socket programs look up SCOPE_INT (after SCOPE_HOST in the
 * node's own namespace, written only where the node gets another path than its pods) and fall
 * back to SCOPE_EXT, so a frontend whose paths agree is written once. */
#define RD_SCOPE_EXT 0
#define RD_SCOPE_INT 1
#define RD_SCOPE_HOST 2

/* rd_svc_val.flags of a frontend's master entry (slot 0). */
#define RD_F_REJECT     (1 << 0) /* no usable endpoint anywhere: refuse at once */
#define RD_F_DROP       (1 << 1) /* traffic policy Local without a local endpoint */
#define RD_F_AFFINITY   (1 << 2) /* ClientIP session affinity, timeout in affinity_timeout */
#define RD_F_SRC_RANGE  (1 << 3) /* loadBalancerSourceRanges apply (rd_src_ranges) */
#define RD_F_MAGLEV     (1 << 4) /* pick from the frontend's Maglev table (rd_maglev) */
#define RD_F_NODEPORT   (1 << 5) /* a NodePort frontend */
#define RD_F_LOOPBACK   (1 << 6) /* a NodePort on 127.0.0.1 / ::1: the host namespace only */
#define RD_F_SRC_NODE_OK (1 << 7) /* the node's primary address is inside the source ranges */
#define RD_F_MASQ       (1 << 8) /* per-packet path: source-NAT to the node for a remote backend */

/* rd_backend.flags */
#define RD_BE_LOCAL     (1 << 0) /* the backend runs on this node */

union rd_addr {
	__u8 b[16];
	__u32 w[4];
};

/* struct rd_svc_key: the frontend (address, port, protocol, scope) and a slot. Slot 0 is the
 * frontend's master entry (count, flags); slots 1..count hold its backends. A key with port and
 * protocol 0 marks a ClusterIP: its other ports are refused. */
struct rd_svc_key {
	union rd_addr addr;
	__be16 port;
	__u16 slot;
	__u8 proto;
	__u8 scope;
	__u8 pad[2];
};

struct rd_svc_val {
	__u32 backend_id;       /* slots > 0 */
	__u16 count;            /* master: number of backend slots */
	__u16 flags;            /* master: RD_F_* */
	__u32 rev_nat_id;       /* the frontend's id (reverse NAT, affinity, counters) */
	__u32 affinity_timeout; /* master: seconds */
};

struct rd_backend {
	union rd_addr addr;
	__be16 port;
	__u8 proto;
	__u8 flags;
};

/* The address a translated socket really talks to, so recvmsg/getpeername can show the service. */
struct rd_sk_key {
	__u64 cookie;
	union rd_addr addr;
	__be16 port;
	__u16 pad;
	__u32 pad2;
};

struct rd_sk_val {
	union rd_addr addr;
	__be16 port;
	__u16 pad;
	__u32 rev_nat_id;
};

struct rd_rev_nat {
	union rd_addr addr;
	__be16 port;
	__u16 pad;
};

/* Socket LB identifies a client by its network namespace: one per pod. */
struct rd_aff_key {
	__u64 client;
	__u32 rev_nat_id;
	__u32 pad;
};

struct rd_aff_val {
	__u64 last_used_ns;
	__u32 backend_id;
	__u32 pad;
};

/* Present while backend_id is one of rev_nat_id's backends: an affinity entry is honoured only then. */
struct rd_aff_match {
	__u32 rev_nat_id;
	__u32 backend_id;
};

struct rd_src_range_key {
	__u32 prefixlen; /* 32 (rev_nat_id) + address bits */
	__u32 rev_nat_id;
	union rd_addr addr;
};

/* rd_config.flags */
#define RD_CFG_MASQ_OFF_CLUSTER4 (1 << 0) /* per-packet path: a frontend without an external entry
					   * masquerades (to remote backends), IPv4 */
#define RD_CFG_MASQ_OFF_CLUSTER6 (1 << 1) /* the same for IPv6 */

struct rd_config {
	union rd_addr node_ip4; /* primary node address of each family (source ranges, SNAT) */
	union rd_addr node_ip6;
	__u32 flags;
};

/* The objects' read-only knobs (one struct, so its layout is checked like the maps'). */
struct rd_knobs {
	__u64 host_netns_cookie; /* the node's own network namespace: loopback NodePorts */
	__u32 host_ns_only;      /* translate only the host namespace's sockets */
	__u32 maglev_m;          /* Maglev table size (a prime) */
	/* Per-packet path: connection tracking timeouts (seconds) and the source-NAT port range. */
	__u32 ct_tcp_syn;
	__u32 ct_tcp_established;
	__u32 ct_tcp_closing;
	__u32 ct_udp;
	__u16 snat_port_min;
	__u16 snat_port_max;
	__u16 snat_skip_min; /* ports inside the range left out: the node's ephemeral range (0: none) */
	__u16 snat_skip_max;
	__u32 dry_run;       /* per-packet path: decide and rewrite, write no map (rudder trace --kernel) */
	__u32 ct_end_window; /* per-packet path: how long a flow end stays live (lib/ct.h), 2^30 ns units */
};

/* What the last packet of a dry run went through (rd_trace, one element, the dry-run object's own). */
#define RD_TR_UNPARSED 0     /* not IPv4/IPv6 TCP/UDP/ICMP the programs handle */
#define RD_TR_TRACKED_FWD 1  /* a tracked flow's packet from the client */
#define RD_TR_TRACKED_REPLY 2 /* a tracked flow's reply */
#define RD_TR_NEW_FLOW 3     /* the first packet of a flow to a frontend */
#define RD_TR_NO_FRONTEND 4  /* not a frontend */
#define RD_TR_ICMP 5         /* an ICMP error about a tracked flow */

#define RD_TRR_FORWARD 0
#define RD_TRR_LOOPBACK 1    /* a loopback NodePort: the host namespace only */
#define RD_TRR_SRC_RANGE 2   /* outside loadBalancerSourceRanges */
#define RD_TRR_POLICY 3      /* traffic policy Local without a local endpoint */
#define RD_TRR_NO_ENDPOINTS 4 /* refused */
#define RD_TRR_NO_BACKEND 5  /* a slot named a missing backend */
#define RD_TRR_NO_NODE_IP 6  /* masquerade without a node address of the family */
#define RD_TRR_NO_SNAT_PORT 7

struct rd_trace {
	__u32 step;
	__u32 reason;
	__u32 rev_nat_id;
	__u32 backend_id;
	__u16 flags;  /* the frontend entry's RD_F_* (with the masquerade fallback applied) */
	__u8 scope;   /* the entry that matched: RD_SCOPE_EXT, or RD_SCOPE_INT as the fallback */
	__u8 snat;
};

struct rd_svc_stats {
	__u64 connects;
	__u64 refused;
	__u64 dropped;
};

struct rd_be_stats {
	__u64 connects;
};

/* A backend whose connected UDP sockets must be destroyed (address, port, protocol). */
struct rd_stale_key {
	union rd_addr addr;
	__be16 port;
	__u8 proto;
	__u8 pad;
};

static __always_inline void rd_addr_v4(union rd_addr *a, __u32 ip4)
{
	a->w[0] = 0;
	a->w[1] = 0;
	a->w[2] = bpf_htonl(0x0000ffff);
	a->w[3] = ip4;
}

static __always_inline bool rd_addr_is_v4(const union rd_addr *a)
{
	return a->w[0] == 0 && a->w[1] == 0 && a->w[2] == bpf_htonl(0x0000ffff);
}

static __always_inline bool rd_addr_is_loopback(const union rd_addr *a)
{
	if (rd_addr_is_v4(a))
		return (bpf_ntohl(a->w[3]) >> 24) == 127;
	return a->w[0] == 0 && a->w[1] == 0 && a->w[2] == 0 && a->w[3] == bpf_htonl(1);
}

static __always_inline bool rd_addr_is_zero(const union rd_addr *a)
{
	return (a->w[0] | a->w[1] | a->w[3]) == 0 && (a->w[2] == 0 || a->w[2] == bpf_htonl(0x0000ffff));
}

#endif
