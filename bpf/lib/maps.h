/* The maps of the socket load balancer. Pinned by name under the agent's pin directory, so a
 * restarted agent adopts them (and the programs attached through pinned links keep running on
 * them). Sizes are defaults: the loader sets max_entries (and rd_maglev's value size) from its
 * flags before loading. */
#ifndef RD_MAPS_H
#define RD_MAPS_H

#include "common.h"

#define RD_MAX_FRONTENDS 262144
#define RD_MAX_BACKENDS 262144

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct rd_svc_key);
	__type(value, struct rd_svc_val);
	__uint(max_entries, 524288);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rd_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct rd_backend);
	__uint(max_entries, RD_MAX_BACKENDS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rd_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct rd_rev_nat);
	__uint(max_entries, RD_MAX_FRONTENDS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rd_rev_nat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct rd_sk_key);
	__type(value, struct rd_sk_val);
	__uint(max_entries, 262144);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rd_rev_sk SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct rd_aff_key);
	__type(value, struct rd_aff_val);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rd_affinity SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct rd_aff_match);
	__type(value, __u8);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rd_aff_match SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct rd_src_range_key);
	__type(value, __u8);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rd_src_ranges SEC(".maps");

/* rev_nat_id -> its Maglev lookup table (__u32 backend ids; the loader sets the value size to
 * 4 x the table size). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, 4 * 16381);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rd_maglev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct rd_config);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rd_config_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct rd_svc_stats);
	__uint(max_entries, RD_MAX_FRONTENDS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rd_svc_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct rd_be_stats);
	__uint(max_entries, RD_MAX_BACKENDS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rd_be_stats SEC(".maps");

#endif
