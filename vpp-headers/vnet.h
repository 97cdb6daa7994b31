/*
 * kp's own minimal declarations of the VPP 26.06 vnet ABI it uses: FIB
 * entries with a DPO of kp's type (VIP capture) and interface features
 * (reply translation). Facts asserted in tests/abi_layout.rs.
 */
#ifndef KP_VNET_H
#define KP_VNET_H

#include "vlib.h"

/* dpo_id_t: 8 bytes, align 8. */
typedef struct __attribute__ ((aligned (8))) dpo_id_t
{
  u8 dpoi_type;
  u8 dpoi_proto; /* DPO_PROTO_IP4=0, IP6=1 */
  u16 dpoi_next_node;
  u32 dpoi_index;
} dpo_id_t;

#define KP_DPO_PROTO_IP4 0
#define KP_DPO_PROTO_IP6 1
#define KP_DPO_PROTO_NUM 6

typedef void (kp_dpo_lock_fn_t) (dpo_id_t *dpo);
typedef struct dpo_vft_t
{
  kp_dpo_lock_fn_t *dv_lock;   /* 0: called unconditionally */
  kp_dpo_lock_fn_t *dv_unlock; /* 8: called unconditionally */
  format_function_t *dv_format; /* 16 */
  void *dv_mem_show;	       /* 24 */
  void *dv_get_next_node;      /* 32 */
  void *dv_get_urpf;	       /* 40 */
  void *dv_get_mtu;	       /* 48 */
  void *dv_mk_interpose;       /* 56 */
} dpo_vft_t; /* 64 bytes */

/* ip46_address_t is packed (align 1): IPv4 lives in bytes 12..16. */
typedef struct __attribute__ ((packed)) kp_ip46_address_t
{
  u8 as_u8[16];
} kp_ip46_address_t;

typedef struct fib_prefix_t
{
  u16 fp_len;
  u8 fp_proto; /* FIB_PROTOCOL_IP4=0, IP6=1 */
  u8 _pad;
  kp_ip46_address_t fp_addr; /* 4 */
} __attribute__ ((aligned (4))) fib_prefix_t; /* 20 bytes */

#define KP_FIB_PROTOCOL_IP4 0
#define KP_FIB_PROTOCOL_IP6 1
#define KP_FIB_SOURCE_PRIORITY_HI 0x10
#define KP_FIB_SOURCE_BH_SIMPLE 2
#define KP_FIB_ENTRY_FLAG_EXCLUSIVE 8

u8 dpo_register_new_type (const dpo_vft_t *vft,
			  const char *const *const *nodes);
void dpo_set (dpo_id_t *dpo, u8 type, u8 proto, u32 index);
void dpo_reset (dpo_id_t *dpo);
u8 fib_source_allocate (const char *name, u8 prio, u32 bh);
u32 fib_table_find (u8 proto, u32 table_id);
u32 fib_table_entry_special_dpo_add (u32 fib_index, const fib_prefix_t *pfx,
				     u8 source, u16 flags,
				     const dpo_id_t *dpo);
void fib_table_entry_special_remove (u32 fib_index, const fib_prefix_t *pfx,
				     u8 source);

/* ---- FIB graph nodes (vnet/fib/fib_node.h): how kp tracks pod routes ---- */
typedef struct fib_node_t
{
  u8 fn_type;	   /* 0: fib_node_type_t */
  u8 _pad0;
  u16 fn_pad;	   /* 2 */
  u32 fn_children; /* 4: fib_node_list_t */
  u32 fn_locks;	   /* 8 */
} fib_node_t;	   /* 12 bytes */

struct fib_node_back_walk_ctx_t; /* opaque to kp */
#define KP_FIB_NODE_BACK_WALK_CONTINUE 1

typedef struct fib_node_vft_t
{
  fib_node_t *(*fnv_get) (u32 index);					  /* 0 */
  void (*fnv_last_lock) (fib_node_t *node);				  /* 8 */
  int (*fnv_back_walk) (fib_node_t *node,
			struct fib_node_back_walk_ctx_t *ctx);		  /* 16 */
  void (*fnv_mem_show) (void);						  /* 24 */
} fib_node_vft_t; /* 32 bytes */

u8 fib_node_register_new_type (const char *name, const fib_node_vft_t *vft);
void fib_node_init (fib_node_t *node, u8 type);
/* Tracks a prefix (adding it with the recursive-resolution source if
 * needed); the child is told of forwarding changes by back-walks. */
u32 fib_entry_track (u32 fib_index, const fib_prefix_t *prefix, u8 child_type,
		     u32 child_index, u32 *sibling);
void fib_entry_untrack (u32 fib_entry_index, u32 sibling);
const dpo_id_t *fib_entry_contribute_ip_forwarding (u32 fib_entry_index);
/* Stacks `dpo` on `parent` as seen from graph node `child_node_index`:
 * sets dpoi_next_node to that node's arc (added if missing). */
void dpo_stack_from_node (u32 child_node_index, dpo_id_t *dpo,
			  const dpo_id_t *parent);

/* ---- features ---- */
typedef struct vnet_feature_registration_t
{
  struct vnet_feature_registration_t *next;	   /* 0 */
  struct vnet_feature_registration_t *next_in_arc; /* 8 */
  char *arc_name;				   /* 16 */
  char *node_name;				   /* 24 */
  u32 *feature_index_ptr;			   /* 32 */
  u32 feature_index;				   /* 40 */
  char **runs_before;				   /* 48 */
  char **runs_after;				   /* 56 */
  void *enable_disable_cb;			   /* 64 */
} vnet_feature_registration_t; /* 72 bytes */

typedef struct vnet_feature_main_t
{
  void *next_arc;			       /* 0 */
  u8 _pad0[16 - 8];
  vnet_feature_registration_t *next_feature; /* 16 */
  u8 _pad1[64 - 24];
  u32 *shared_feature_config_heap; /* 64 */
  u8 _pad2[120 - 72];
} vnet_feature_main_t; /* 120 bytes */

extern vnet_feature_main_t feature_main;

int vnet_feature_enable_disable (const char *arc_name, const char *node_name,
				 u32 sw_if_index, int enable_disable,
				 void *feature_config, u32 n_feature_config_bytes);

void *vnet_get_main (void);
uword unformat_vnet_sw_interface (unformat_input_t *input, va_list *args);
u8 *format_vnet_sw_if_index_name (u8 *s, va_list *args);

#endif
