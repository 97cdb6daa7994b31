/*
 * kp's own minimal declarations of the VPP 26.06 vlib ABI it uses.
 * Facts: sizes and offsets as measured on VPP 26.06 x86_64 (asserted in
 * tests/abi_layout.rs). Fields kp does not use are padding.
 */
#ifndef KP_VLIB_H
#define KP_VLIB_H

#include "vppinfra.h"

struct vlib_main_t;
struct vlib_node_runtime_t;
struct vlib_frame_t;

/* ---- plugin registration (448 bytes, align 64) ---- */
typedef struct __attribute__ ((aligned (64))) vlib_plugin_registration_t
{
  u8 flags; /* default_disabled:1 (0x01), deep_bind:1 (0x02) */
  char version[64];
  char version_required[64];
  char overrides[256];
  const char *early_init;
  const char *description;
  char *load_after;
} vlib_plugin_registration_t;

/* ---- vlib_main_t (1408 bytes, align 64): only what kp reads ---- */
typedef struct __attribute__ ((aligned (64))) vlib_main_t
{
  clib_time_t clib_time; /* 0 */
  f64 time_offset;	 /* 80 */
  u8 _pad0[296 - 88];
  void *buffer_main; /* 296: vlib_buffer_main_t * */
  u8 _pad1[680 - 304];
  u64 *error_counters; /* 680: error_main.counters */
  u8 _pad2[1136 - 688];
  u16 thread_index; /* 1136 */
  u8 _pad3[1408 - 1138];
} vlib_main_t;

/* vlib_global_main_t: 256 bytes; list heads kp links into. */
typedef struct __attribute__ ((aligned (64))) vlib_global_main_t
{
  vlib_main_t **vlib_mains; /* 0 */
  u8 _pad0[80 - 8];
  void *cli_command_registrations; /* 80: cli_main.cli_command_registrations */
  u8 _pad1[120 - 88];
  void *node_registrations; /* 120 */
  u8 _pad2[152 - 128];
  void *init_function_registrations;		/* 152 */
  void *main_loop_enter_function_registrations; /* 160 */
  void *main_loop_exit_function_registrations;	/* 168 */
  void *worker_init_function_registrations;	/* 176 */
  void *num_workers_change_function_registrations; /* 184 */
  void *api_init_function_registrations;	/* 192 */
  void *config_function_registrations;		/* 200 */
  u8 _pad3[256 - 208];
} vlib_global_main_t;

/* vlib_thread_main_t: kp only reads n_vlib_mains @40. */
typedef struct vlib_thread_main_t
{
  u8 _pad0[40];
  u32 n_vlib_mains;
} vlib_thread_main_t;

/* ---- buffers ---- */
typedef struct __attribute__ ((aligned (64))) vlib_buffer_main_t
{
  uword buffer_mem_start; /* 0 */
  uword buffer_mem_size;  /* 8 */
  u8 _pad0[256 - 16];
} vlib_buffer_main_t;

#define KP_VLIB_BUFFER_IS_TRACED 0x1
#define KP_VLIB_BUFFER_NEXT_PRESENT 0x2
#define KP_VLIB_BUFFER_TOTAL_LENGTH_VALID 0x4
/* vnet_buffer(b)->oflags: the L4 checksum field holds a partial sum. */
#define KP_VNET_BUFFER_OFFLOAD_F_TCP_CKSUM 0x2
#define KP_VNET_BUFFER_OFFLOAD_F_UDP_CKSUM 0x4
#define KP_VLIB_NODE_FLAG_TRACE	 0x20 /* vlib_node_runtime_t.flags */
#define KP_VNET_BUFFER_F_OFFLOAD (1u << 22)
/* vnet buffer flags that describe the headers (vnet/buffer.h, bits 32-n). */
#define KP_VNET_BUFFER_F_IS_IP4 (1u << 24)
#define KP_VNET_BUFFER_F_IS_IP6 (1u << 23)
#define KP_VNET_BUFFER_F_L3_HDR_OFFSET_VALID (1u << 19)
#define KP_VNET_BUFFER_F_L4_HDR_OFFSET_VALID (1u << 18)
#define KP_VNET_BUFFER_F_GSO (1u << 14)
/* Set by VPP on packets it makes itself (ip4/6-icmp-error among them). */
#define KP_VNET_BUFFER_F_LOCALLY_ORIGINATED (1u << 25)
/* oflags: the IPv4 header checksum is left to offload. */
#define KP_VNET_BUFFER_OFFLOAD_F_IP_CKSUM 0x1

typedef struct __attribute__ ((aligned (64))) vlib_buffer_t
{
  i16 current_data;	      /* 0 */
  u16 current_length;	      /* 2 */
  u32 flags;		      /* 4 */
  u32 flow_id;		      /* 8 */
  u8 ref_count;		      /* 12 */
  u8 buffer_pool_index;	      /* 13 */
  u16 error;		      /* 14 */
  u32 next_buffer;	      /* 16 */
  u32 current_config_index;   /* 20 */
  u32 opaque[10];	      /* 24: vnet_buffer_opaque_t */
  u32 trace_handle;	      /* 64 */
  u32 total_length_not_including_first_buffer; /* 68 */
  u32 opaque2[14];	      /* 72 */
  u8 pre_data[128];	      /* 128 */
  u8 data[];		      /* 256 */
} vlib_buffer_t;

/* Offsets (from the buffer start) of vnet_buffer() fields kp uses. */
#define KP_VNET_SW_IF_INDEX_RX_OFFSET 24
#define KP_VNET_SW_IF_INDEX_TX_OFFSET 28
#define KP_VNET_L3_HDR_OFFSET_OFFSET  34
#define KP_VNET_L4_HDR_OFFSET_OFFSET  36
#define KP_VNET_OFLAGS_OFFSET	      39
#define KP_VNET_IP_ADJ_INDEX_TX_OFFSET 44
/* u8 ip.save_rewrite_length: on an output arc, the L2 header's length
   before the IP header (ip4/6-rewrite sets it). */
#define KP_VNET_IP_SAVE_REWRITE_LENGTH_OFFSET 56

/* ---- frames and node runtimes ---- */
typedef struct vlib_frame_t
{
  u16 frame_flags;
  u16 flags;
  u16 scalar_offset;
  u16 vector_offset;
  u16 aux_offset;
  u16 n_vectors;
  u16 frame_size_index;
} vlib_frame_t; /* 14 bytes, align 2 */

typedef struct __attribute__ ((aligned (64))) vlib_node_runtime_t
{
  void *function;	  /* 0 */
  u16 *errors;		  /* 8: vec of vlib_error_t */
  u8 _pad0[36 - 16];
  u32 next_frame_index;	  /* 36 */
  u32 node_index;	  /* 40 */
  u8 _pad1[60 - 44];
  u16 flags;		  /* 60 */
  u16 state;		  /* 62 */
  u16 n_next_nodes;	  /* 64 */
  u16 cached_next_index;  /* 66 */
  u8 _pad2[72 - 68];
  u8 runtime_data[56];	  /* 72 */
} vlib_node_runtime_t;

typedef uword (vlib_node_function_t) (vlib_main_t *vm,
				      vlib_node_runtime_t *node,
				      vlib_frame_t *frame);

typedef struct vlib_error_desc_t
{
  const char *name;
  const char *desc;
  u32 severity; /* ERROR=0 WARN=1 INFO=2 */
  u32 stats_entry_index;
} vlib_error_desc_t; /* 24 bytes */

#define KP_VLIB_NODE_TYPE_INTERNAL 0
#define KP_VLIB_NODE_TYPE_PROCESS  3
#define KP_VLIB_NODE_FLAG_TRACE_SUPPORTED 0x100

typedef struct vlib_node_registration_t
{
  vlib_node_function_t *function;	 /* 0 */
  void *node_fn_registrations;		 /* 8 */
  const char *name;			 /* 16 */
  const char *sibling_of;		 /* 24 */
  u32 index;				 /* 32 */
  u32 type;				 /* 36 */
  const char *const *error_strings;	 /* 40 */
  const vlib_error_desc_t *error_counters; /* 48 */
  void *format_buffer;			 /* 56 */
  void *unformat_buffer;		 /* 64 */
  format_function_t *format_trace;	 /* 72 */
  void *unformat_trace;			 /* 80 */
  void *validate_frame;			 /* 88 */
  void *runtime_data;			 /* 96 */
  u16 process_log2_n_stack_bytes;	 /* 104 */
  u8 runtime_data_bytes;		 /* 106 */
  u8 state;				 /* 107 */
  u16 flags;				 /* 108 */
  u8 protocol_hint;			 /* 110 */
  u8 vector_size;			 /* 111 */
  u8 aux_size;				 /* 112 */
  u16 scalar_size;			 /* 114 */
  u16 n_errors;				 /* 116 */
  u16 n_next_nodes;			 /* 118 */
  struct vlib_node_registration_t *next_registration; /* 120 */
  /* followed by const char *next_nodes[n_next_nodes] at 128 */
} vlib_node_registration_t;

/* vlib_buffer_func_main: exported table of enqueue functions. */
typedef void (kp_enqueue_to_next_fn_t) (vlib_main_t *vm,
					vlib_node_runtime_t *node, u32 *buffers,
					u16 *nexts, uword count);
typedef struct vlib_buffer_func_main_t
{
  kp_enqueue_to_next_fn_t *buffer_enqueue_to_next_fn;
  void *other[8];
} vlib_buffer_func_main_t; /* 72 bytes */

/* ---- CLI ---- */
struct vlib_cli_command_t;
typedef clib_error_t *(vlib_cli_command_function_t) (
  vlib_main_t *vm, unformat_input_t *input, struct vlib_cli_command_t *cmd);

typedef struct vlib_cli_command_t
{
  char *path;					/* 0 */
  char *short_help;				/* 8 */
  char *long_help;				/* 16 */
  vlib_cli_command_function_t *function;	/* 24 */
  uword function_arg;				/* 32 */
  uword is_mp_safe;				/* 40 */
  void *sub_commands;				/* 48 */
  void *sub_command_index_by_name;		/* 56 */
  void *sub_command_positions;			/* 64 */
  void *sub_rule_index_by_name;			/* 72 */
  void *sub_rules;				/* 80 */
  struct vlib_cli_command_t *next_cli_command;	/* 88 */
  u32 hit_counter;				/* 96 */
} vlib_cli_command_t; /* 104 bytes */

/* ---- init and config functions ---- */
typedef clib_error_t *(vlib_init_function_t) (vlib_main_t *vm);

typedef struct _vlib_init_function_list_elt
{
  struct _vlib_init_function_list_elt *next_init_function; /* 0 */
  vlib_init_function_t *f;				  /* 8 */
  char *name;						  /* 16 */
  char **runs_before;					  /* 24 */
  char **runs_after;					  /* 32 */
  char **init_order;					  /* 40 */
} _vlib_init_function_list_elt_t; /* 48 bytes */

typedef clib_error_t *(vlib_config_function_t) (vlib_main_t *vm,
						unformat_input_t *input);

typedef struct vlib_config_function_runtime_t
{
  vlib_config_function_t *function;			 /* 0 */
  unformat_input_t input;				 /* 8 */
  struct vlib_config_function_runtime_t *next_registration; /* 56 */
  u8 is_early;						 /* 64 */
  char name[32];					 /* 65 */
} vlib_config_function_runtime_t; /* 104 bytes */

/* ---- counters ---- */
typedef struct vlib_counter_t
{
  u64 packets;
  u64 bytes;
} vlib_counter_t;

typedef struct vlib_simple_counter_main_t
{
  u64 **counters; /* per-thread vectors */
  char *name;
  char *stat_segment_name;
  u32 stats_entry_index;
} vlib_simple_counter_main_t; /* 32 bytes */

typedef struct vlib_combined_counter_main_t
{
  vlib_counter_t **counters;
  char *name;
  char *stat_segment_name;
  u32 stats_entry_index;
} vlib_combined_counter_main_t; /* 32 bytes */

/* ---- stats segment collectors (vlib/stats/stats.h): called from the
 * statseg-collector-process on the main thread, every update-interval
 * seconds (10 by default) ---- */
typedef struct vlib_stats_collector_data_t
{
  u32 entry_index;  /* 0 */
  u32 vector_index; /* 4 */
  u64 private_data; /* 8 */
  void *entry;	    /* 16: vlib_stats_entry_t * */
} vlib_stats_collector_data_t; /* 24 bytes */

typedef void (*vlib_stats_collector_fn_t) (vlib_stats_collector_data_t *);

typedef struct vlib_stats_collector_reg_t
{
  vlib_stats_collector_fn_t collect_fn; /* 0 */
  u32 entry_index;			/* 8 */
  u32 vector_index;			/* 12 */
  u64 private_data;			/* 16 */
} vlib_stats_collector_reg_t; /* 24 bytes */

/* ---- exported symbols ---- */
extern vlib_global_main_t vlib_global_main;
extern vlib_thread_main_t vlib_thread_main;
extern vlib_buffer_func_main_t vlib_buffer_func_main;
extern char *vlib_plugin_app_version;

/* vlib_stats_main: its first (and only) member is the stats segment,
 * vlib_stats_segment_t, 112 bytes; kp reads memory_size (i64 @72) and
 * heap (@88), the heap counters live in. */
typedef struct kp_stats_segment_t
{
  u8 _before_memory_size[72];
  i64 memory_size;
  u8 _log2_page_sz_and_flag[8];
  void *heap;
  u8 _after_heap[16];
} kp_stats_segment_t;
extern kp_stats_segment_t vlib_stats_main;

void vlib_cli_output (vlib_main_t *vm, char *fmt, ...);
void vlib_cli_command_registration_helper (vlib_cli_command_t *c);
void *vlib_add_trace (vlib_main_t *vm, vlib_node_runtime_t *r,
		      vlib_buffer_t *b, u32 n_data_bytes);
void vlib_worker_thread_barrier_sync_int (vlib_main_t *vm,
					  const char *func_name);
void vlib_worker_thread_barrier_release (vlib_main_t *vm);
vlib_main_t *vlib_get_main_not_inline (void);
u32 vlib_stats_add_gauge (char *fmt, ...);
void vlib_stats_set_gauge (u32 index, u64 value);
void vlib_stats_register_collector_fn (vlib_stats_collector_reg_t *r);
void vlib_validate_simple_counter (vlib_simple_counter_main_t *cm, u32 index);
void vlib_validate_combined_counter (vlib_combined_counter_main_t *cm,
				     u32 index);

#endif
