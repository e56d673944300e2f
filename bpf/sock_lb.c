/* Socket-level load balancing: connections that start in a process inside the attached cgroup
 * (pods and the node's own processes) are sent to a backend at connect()/sendmsg(), so their
 * packets carry the backend's address from the first one and need no NAT and no conntrack.
 * recvmsg()/getpeername() show the application the service address it asked for. */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/lb.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

static __always_inline void rd_src4(struct bpf_sock_addr *ctx, union rd_addr *src, bool msg)
{
	__u32 ip = msg ? ctx->msg_src_ip4 : 0;
	struct bpf_sock *sk = ctx->sk;

	if (!ip && sk)
		ip = sk->src_ip4;
	if (ip)
		rd_addr_v4(src, ip);
}

static __always_inline void rd_src6(struct bpf_sock_addr *ctx, union rd_addr *src, bool msg)
{
	struct bpf_sock *sk = ctx->sk;

	if (msg) {
		src->w[0] = ctx->msg_src_ip6[0];
		src->w[1] = ctx->msg_src_ip6[1];
		src->w[2] = ctx->msg_src_ip6[2];
		src->w[3] = ctx->msg_src_ip6[3];
	}
	if (rd_addr_is_zero(src) && sk) {
		src->w[0] = sk->src_ip6[0];
		src->w[1] = sk->src_ip6[1];
		src->w[2] = sk->src_ip6[2];
		src->w[3] = sk->src_ip6[3];
	}
}

static __always_inline int rd_fwd4(struct bpf_sock_addr *ctx, bool msg)
{
	union rd_addr dst, src = {};
	__be16 port = (__be16)ctx->user_port;
	int r;

	rd_addr_v4(&dst, ctx->user_ip4);
	rd_src4(ctx, &src, msg);
	r = rd_xlate(ctx, &dst, &port, (__u8)ctx->protocol, &src, true);
	if (r < 0) {
		bpf_set_retval(r);
		return RD_SYS_REJECT;
	}
	if (r == RD_XLATED && rd_addr_is_v4(&dst)) {
		ctx->user_ip4 = dst.w[3];
		ctx->user_port = (__u32)port;
	}
	return RD_SYS_PROCEED;
}

static __always_inline int rd_fwd6(struct bpf_sock_addr *ctx, bool msg)
{
	union rd_addr dst, src = {};
	__be16 port = (__be16)ctx->user_port;
	int r;

	dst.w[0] = ctx->user_ip6[0];
	dst.w[1] = ctx->user_ip6[1];
	dst.w[2] = ctx->user_ip6[2];
	dst.w[3] = ctx->user_ip6[3];
	rd_src6(ctx, &src, msg);
	r = rd_xlate(ctx, &dst, &port, (__u8)ctx->protocol, &src, rd_addr_is_v4(&dst));
	if (r < 0) {
		bpf_set_retval(r);
		return RD_SYS_REJECT;
	}
	if (r == RD_XLATED) {
		/* A v4-mapped service on an IPv6 socket gets a v4-mapped backend. */
		ctx->user_ip6[0] = dst.w[0];
		ctx->user_ip6[1] = dst.w[1];
		ctx->user_ip6[2] = dst.w[2];
		ctx->user_ip6[3] = dst.w[3];
		ctx->user_port = (__u32)port;
	}
	return RD_SYS_PROCEED;
}

static __always_inline int rd_rev4(struct bpf_sock_addr *ctx)
{
	union rd_addr peer;
	const struct rd_sk_val *v;

	rd_addr_v4(&peer, ctx->user_ip4);
	v = rd_rev_lookup(ctx, &peer, (__be16)ctx->user_port);
	if (v && rd_addr_is_v4(&v->addr)) {
		ctx->user_ip4 = v->addr.w[3];
		ctx->user_port = (__u32)v->port;
	}
	return RD_SYS_PROCEED;
}

static __always_inline int rd_rev6(struct bpf_sock_addr *ctx)
{
	union rd_addr peer;
	const struct rd_sk_val *v;

	peer.w[0] = ctx->user_ip6[0];
	peer.w[1] = ctx->user_ip6[1];
	peer.w[2] = ctx->user_ip6[2];
	peer.w[3] = ctx->user_ip6[3];
	v = rd_rev_lookup(ctx, &peer, (__be16)ctx->user_port);
	if (v) {
		ctx->user_ip6[0] = v->addr.w[0];
		ctx->user_ip6[1] = v->addr.w[1];
		ctx->user_ip6[2] = v->addr.w[2];
		ctx->user_ip6[3] = v->addr.w[3];
		ctx->user_port = (__u32)v->port;
	}
	return RD_SYS_PROCEED;
}

SEC("cgroup/connect4")
int rd_connect4(struct bpf_sock_addr *ctx) { return rd_fwd4(ctx, false); }

SEC("cgroup/sendmsg4")
int rd_sendmsg4(struct bpf_sock_addr *ctx) { return rd_fwd4(ctx, true); }

SEC("cgroup/recvmsg4")
int rd_recvmsg4(struct bpf_sock_addr *ctx) { return rd_rev4(ctx); }

SEC("cgroup/getpeername4")
int rd_getpeername4(struct bpf_sock_addr *ctx) { return rd_rev4(ctx); }

SEC("cgroup/connect6")
int rd_connect6(struct bpf_sock_addr *ctx) { return rd_fwd6(ctx, false); }

SEC("cgroup/sendmsg6")
int rd_sendmsg6(struct bpf_sock_addr *ctx) { return rd_fwd6(ctx, true); }

SEC("cgroup/recvmsg6")
int rd_recvmsg6(struct bpf_sock_addr *ctx) { return rd_rev6(ctx); }

SEC("cgroup/getpeername6")
int rd_getpeername6(struct bpf_sock_addr *ctx) { return rd_rev6(ctx); }
