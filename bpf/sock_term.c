/* Destroys connected UDP sockets whose peer is a backend that went away, so clients reconnect
 * (through connect() and the socket load balancer) to a live one. Run by the agent through a
 * BPF iterator in each network namespace whose processes the socket load balancer serves. */
#include "lib/common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct rd_stale_key);
	__type(value, __u8);
	__uint(max_entries, 4096);
} rd_stale SEC(".maps");

__u64 rd_destroyed = 0;

SEC("iter/udp")
int rd_sock_term(struct bpf_iter__udp *ctx)
{
	struct udp_sock *udp = ctx->udp_sk;
	struct sock_common *skc;
	struct rd_stale_key key = { .proto = IPPROTO_UDP };

	if (!udp)
		return 0;
	skc = &udp->inet.sk.__sk_common;
	if (skc->skc_state != 1 /* TCP_ESTABLISHED: connected */)
		return 0;
	if (skc->skc_family == AF_INET) {
		rd_addr_v4(&key.addr, skc->skc_daddr);
	} else if (skc->skc_family == AF_INET6) {
		__builtin_memcpy(&key.addr, &skc->skc_v6_daddr, 16);
	} else {
		return 0;
	}
	key.port = skc->skc_dport;
	if (bpf_map_lookup_elem(&rd_stale, &key) && bpf_sock_destroy(skc) == 0)
		__sync_fetch_and_add(&rd_destroyed, 1);
	return 0;
}
