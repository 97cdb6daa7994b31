/*
 * kp's own minimal declarations of the VPP 26.06 vppinfra ABI it uses.
 * Written from measured facts (sizes, offsets, signatures; see
 * tests/abi_layout.rs), not copied from VPP. Only what kp touches is named;
 * the rest is padding of the right size.
 */
#ifndef KP_VPPINFRA_H
#define KP_VPPINFRA_H

#include <stdint.h>
#include <stddef.h>
#include <stdarg.h>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef int8_t i8;
typedef int16_t i16;
typedef int32_t i32;
typedef int64_t i64;
typedef uint64_t uword;
typedef double f64;

/* VPP vectors keep an 8-byte header just before element 0:
 * u32 len @-8, u8 hdr_size @-4, u8 (log2_align:7, default_heap:1) @-3,
 * u8 grow_elts @-2. */
typedef struct kp_vec_header_t
{
  u32 len;
  u8 hdr_size;
  u8 log2_align_default_heap;
  u8 grow_elts;
} kp_vec_header_t; /* 8 bytes */

/* clib_mem_usage_t: 72 bytes, all uword; for a dlmalloc heap bytes_free
 * (@24) is mallinfo's fordblks: the free space, top chunk included. */
typedef struct clib_mem_usage_t
{
  uword object_count;
  uword bytes_total;
  uword bytes_used;
  uword bytes_free;
  uword bytes_overhead;
  uword bytes_free_reclaimed;
  uword bytes_used_sbrk;
  uword bytes_used_mmap;
  uword bytes_max;
} clib_mem_usage_t;

void clib_mem_get_heap_usage (void *heap, clib_mem_usage_t *usage);

/* Argument of _vec_alloc_internal / _vec_resize_internal. */
typedef struct vec_attr_t
{
  void *heap;
  u32 elt_sz;
  u16 hdr_sz;
  u16 align;
} vec_attr_t; /* 16 bytes */

/* clib_error_t: 32 bytes. `what` is a VPP vector. */
typedef struct clib_error_t
{
  u8 *what;
  const char *where;
  uword flags;
  uword code;
} clib_error_t;

/* unformat_input_t: 48 bytes. Arguments are buffer[index .. vec_len). */
typedef struct unformat_input_t
{
  u8 *buffer;
  uword index;
  uword *buffer_marks;
  void *fill_buffer;
  void *free;
  void *fill_buffer_arg;
} unformat_input_t;

/* clib_time_t: 80 bytes, the start of vlib_main_t. */
typedef struct clib_time_t
{
  u64 total_cpu_time;
  u64 last_cpu_time;
  f64 clocks_per_second;
  f64 seconds_per_clock;
  f64 init_reference_time;
  u64 init_cpu_time;
  u64 last_verify_cpu_time;
  f64 last_verify_reference_time;
  u32 log2_clocks_per_second;
  u32 log2_clocks_per_frequency_verify;
  f64 damping_constant;
} clib_time_t;

/* A format callback: u8 *f (u8 *s, va_list *args). Not variadic. */
typedef u8 *(format_function_t) (u8 *s, va_list *args);

/* Exported functions. */
u8 *format (u8 *s, const char *fmt, ...);
clib_error_t *_clib_error_return (clib_error_t *errors, uword code,
				  uword flags, const char *where,
				  const char *fmt, ...);
void *_vec_alloc_internal (uword n_elts, const vec_attr_t *attr);
void *_vec_resize_internal (void *v, uword n_elts, const vec_attr_t *attr);
void vec_free_not_inline (void *v);
uword unformat_user (unformat_input_t *input, void *func, ...);
uword unformat_line_input (unformat_input_t *i, va_list *va);
void clib_time_verify_frequency (clib_time_t *c);

#endif
