/*
 * kp's own minimal declarations of the VPP 26.06 binary-API ABI it uses.
 * Messages themselves are packed, big-endian, and handled as bytes in Rust.
 */
#ifndef KP_VLIBAPI_H
#define KP_VLIBAPI_H

#include "vppinfra.h"

typedef struct vl_msg_api_msg_config_t
{
  int id;	       /* 0 */
  char *name;	       /* 8: stored by pointer */
  u32 crc;	       /* 16 */
  void *handler;       /* 24: void (*)(void *msg) */
  void *cleanup;       /* 32 */
  void *endian;	       /* 40 */
  void *format_fn;     /* 48 */
  void *tojson;	       /* 56 */
  void *fromjson;      /* 64 */
  void *calc_size;     /* 72: uword (*)(void *msg) */
  int size;	       /* 80 */
  u32 flags;	       /* 84: traced 1, replay 2, bounce 4, mp_safe 8, autoendian 16 */
} vl_msg_api_msg_config_t; /* 88 bytes */

typedef struct vl_api_registration_t
{
  u32 registration_type;  /* 0: SHMEM=1, SOCKET_SERVER=3 ... */
  u8 _pad0[40 - 4];
  void *vl_input_queue;	  /* 40 */
  u8 _pad1[120 - 48];
} vl_api_registration_t; /* 120 bytes */

/* registration_type values: above SHMEM, the client is on a socket. */
#define KP_REGISTRATION_TYPE_SHMEM 1

typedef struct api_main_t
{
  u8 _pad0[232];
  char **json_api_repr; /* 232: vec of C strings */
  u8 _pad1[328 - 240];
} api_main_t; /* 328 bytes */

u16 vl_msg_api_get_msg_ids (const char *name, int n);
void vl_msg_api_add_msg_name_crc (api_main_t *am, const char *string, u32 id);
void vl_msg_api_config (vl_msg_api_msg_config_t *c);
void *vl_msg_api_alloc (int nbytes);
void *vl_msg_api_alloc_zero (int nbytes);
void vl_msg_api_free (void *a);
u8 vl_socket_api_registration_handle_is_valid (u32 index);
vl_api_registration_t *vl_socket_api_client_handle_to_registration (u32 h);
vl_api_registration_t *vl_mem_api_client_index_to_registration (u32 index);
void vl_socket_api_send (vl_api_registration_t *rp, u8 *elem);
int vl_msg_api_send_shmem (void *q, u8 *elem);

#endif
