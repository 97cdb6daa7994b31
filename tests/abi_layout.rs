//! Every struct kp shares with VPP has VPP 26.06's size, alignment and
//! field offsets (facts measured on a real 26.06 build; see
//! ../shared/vpp-26.06-abi.md). A wrong declaration in `vpp-headers/`
//! fails here, in CI, without VPP.

use core::mem::{align_of, offset_of, size_of};
use kp_plugin::vpp::sys::*;

macro_rules! layout {
    ($t:ty, size $size:expr, align $align:expr $(, $field:ident @ $off:expr)* $(,)?) => {{
        assert_eq!(size_of::<$t>(), $size, "size of {}", stringify!($t));
        assert_eq!(align_of::<$t>(), $align, "align of {}", stringify!($t));
        $( assert_eq!(offset_of!($t, $field), $off, "{}.{}", stringify!($t), stringify!($field)); )*
    }};
}

#[test]
fn vppinfra() {
    layout!(clib_error_t, size 32, align 8, what @ 0, where_ @ 8, flags @ 16, code @ 24);
    layout!(unformat_input_t, size 48, align 8, buffer @ 0, index @ 8, buffer_marks @ 16, fill_buffer @ 24,
        free @ 32, fill_buffer_arg @ 40);
    layout!(clib_time_t, size 80, align 8, total_cpu_time @ 0, last_cpu_time @ 8, clocks_per_second @ 16,
        seconds_per_clock @ 24, last_verify_cpu_time @ 48, log2_clocks_per_frequency_verify @ 68);
    layout!(kp_vec_header_t, size 8, align 4, len @ 0);
    layout!(vec_attr_t, size 16, align 8, heap @ 0, elt_sz @ 8, hdr_sz @ 12, align @ 14);
    layout!(clib_mem_usage_t, size 72, align 8, bytes_total @ 8, bytes_used @ 16, bytes_free @ 24, bytes_max @ 64);
}

#[test]
fn plugin_registration() {
    layout!(vlib_plugin_registration_t, size 448, align 64, flags @ 0, version @ 1, version_required @ 65,
        overrides @ 129, early_init @ 392, description @ 400, load_after @ 408);
}

#[test]
fn vlib_main_and_globals() {
    layout!(vlib_main_t, size 1408, align 64, clib_time @ 0, time_offset @ 80, buffer_main @ 296,
        error_counters @ 680, thread_index @ 1136);
    layout!(vlib_global_main_t, size 256, align 64, vlib_mains @ 0, cli_command_registrations @ 80,
        node_registrations @ 120, init_function_registrations @ 152,
        main_loop_enter_function_registrations @ 160, main_loop_exit_function_registrations @ 168,
        worker_init_function_registrations @ 176, config_function_registrations @ 200);
    assert_eq!(offset_of!(vlib_thread_main_t, n_vlib_mains), 40);
    layout!(vlib_buffer_main_t, size 256, align 64, buffer_mem_start @ 0, buffer_mem_size @ 8);
    layout!(kp_stats_segment_t, size 112, align 8, memory_size @ 72, heap @ 88);
}

#[test]
fn buffers_frames_runtimes() {
    layout!(vlib_buffer_t, size 256, align 64, current_data @ 0, current_length @ 2, flags @ 4, flow_id @ 8,
        ref_count @ 12, buffer_pool_index @ 13, error @ 14, next_buffer @ 16, current_config_index @ 20,
        opaque @ 24, trace_handle @ 64, total_length_not_including_first_buffer @ 68, opaque2 @ 72,
        pre_data @ 128, data @ 256);
    assert_eq!(KP_VNET_SW_IF_INDEX_RX_OFFSET, 24);
    assert_eq!(KP_VNET_SW_IF_INDEX_TX_OFFSET, 28);
    assert_eq!(KP_VNET_IP_ADJ_INDEX_TX_OFFSET, 44);
    assert_eq!(KP_VNET_OFLAGS_OFFSET, 39);
    assert_eq!(KP_VNET_IP_SAVE_REWRITE_LENGTH_OFFSET, 56);
    // vnet buffer flag n is 1 << (32 - n): LOCALLY_ORIGINATED is flag 7,
    // IS_IP4 flag 8, GSO flag 18.
    assert_eq!(KP_VNET_BUFFER_F_LOCALLY_ORIGINATED, 1 << 25);
    assert_eq!(KP_VNET_BUFFER_F_IS_IP4, 1 << 24);
    assert_eq!(KP_VNET_BUFFER_F_GSO, 1 << 14);
    // vnet_buffer_opaque_t: i16 l2/l3/l4_hdr_offset at 8, 10, 12 of the
    // opaque area (buffer offset 24).
    assert_eq!(KP_VNET_L3_HDR_OFFSET_OFFSET, 34);
    assert_eq!(KP_VNET_L4_HDR_OFFSET_OFFSET, 36);
    // vnet/buffer.h flags: bit n is 1 << (32 - n).
    assert_eq!(KP_VNET_BUFFER_F_IS_IP4, 1 << (32 - 8));
    assert_eq!(KP_VNET_BUFFER_F_IS_IP6, 1 << (32 - 9));
    assert_eq!(KP_VNET_BUFFER_F_L3_HDR_OFFSET_VALID, 1 << (32 - 13));
    assert_eq!(KP_VNET_BUFFER_F_L4_HDR_OFFSET_VALID, 1 << (32 - 14));
    assert_eq!(KP_VNET_BUFFER_F_GSO, 1 << (32 - 18));
    assert_eq!(KP_VNET_BUFFER_OFFLOAD_F_IP_CKSUM, 1);
    layout!(vlib_frame_t, size 14, align 2, frame_flags @ 0, flags @ 2, scalar_offset @ 4, vector_offset @ 6,
        aux_offset @ 8, n_vectors @ 10, frame_size_index @ 12);
    layout!(vlib_node_runtime_t, size 128, align 64, function @ 0, errors @ 8, next_frame_index @ 36,
        node_index @ 40, flags @ 60, state @ 62, n_next_nodes @ 64, cached_next_index @ 66, runtime_data @ 72);
    layout!(vlib_buffer_func_main_t, size 72, align 8, buffer_enqueue_to_next_fn @ 0);
}

#[test]
fn registrations() {
    layout!(vlib_node_registration_t, size 128, align 8, function @ 0, node_fn_registrations @ 8, name @ 16,
        sibling_of @ 24, index @ 32, type_ @ 36, error_strings @ 40, error_counters @ 48, format_buffer @ 56,
        unformat_buffer @ 64, format_trace @ 72, unformat_trace @ 80, validate_frame @ 88, runtime_data @ 96,
        process_log2_n_stack_bytes @ 104, runtime_data_bytes @ 106, state @ 107, flags @ 108,
        protocol_hint @ 110, vector_size @ 111, aux_size @ 112, scalar_size @ 114, n_errors @ 116,
        n_next_nodes @ 118, next_registration @ 120);
    layout!(vlib_error_desc_t, size 24, align 8, name @ 0, desc @ 8, severity @ 16, stats_entry_index @ 20);
    layout!(vlib_cli_command_t, size 104, align 8, path @ 0, short_help @ 8, long_help @ 16, function @ 24,
        function_arg @ 32, is_mp_safe @ 40, sub_commands @ 48, next_cli_command @ 88, hit_counter @ 96);
    layout!(_vlib_init_function_list_elt, size 48, align 8, next_init_function @ 0, f @ 8, name @ 16,
        runs_before @ 24, runs_after @ 32, init_order @ 40);
    layout!(vlib_config_function_runtime_t, size 104, align 8, function @ 0, input @ 8, next_registration @ 56,
        is_early @ 64, name @ 65);
    layout!(vnet_feature_registration_t, size 72, align 8, next @ 0, next_in_arc @ 8, arc_name @ 16,
        node_name @ 24, feature_index_ptr @ 32, feature_index @ 40, runs_before @ 48, runs_after @ 56,
        enable_disable_cb @ 64);
    layout!(vnet_feature_main_t, size 120, align 8, next_arc @ 0, next_feature @ 16,
        shared_feature_config_heap @ 64);
}

#[test]
fn counters() {
    layout!(vlib_simple_counter_main_t, size 32, align 8, counters @ 0, name @ 8, stat_segment_name @ 16,
        stats_entry_index @ 24);
    layout!(vlib_stats_collector_data_t, size 24, align 8, entry_index @ 0, vector_index @ 4,
        private_data @ 8, entry @ 16);
    layout!(vlib_stats_collector_reg_t, size 24, align 8, collect_fn @ 0, entry_index @ 8, vector_index @ 12,
        private_data @ 16);
    layout!(vlib_combined_counter_main_t, size 32, align 8, counters @ 0, name @ 8, stat_segment_name @ 16,
        stats_entry_index @ 24);
    layout!(vlib_counter_t, size 16, align 8, packets @ 0, bytes @ 8);
}

#[test]
fn fib_and_dpo() {
    layout!(dpo_id_t, size 8, align 8, dpoi_type @ 0, dpoi_proto @ 1, dpoi_next_node @ 2, dpoi_index @ 4);
    layout!(dpo_vft_t, size 64, align 8, dv_lock @ 0, dv_unlock @ 8, dv_format @ 16, dv_mem_show @ 24,
        dv_get_next_node @ 32, dv_get_urpf @ 40, dv_get_mtu @ 48, dv_mk_interpose @ 56);
    layout!(fib_prefix_t, size 20, align 4, fp_len @ 0, fp_proto @ 2, fp_addr @ 4);
    // Pod route tracking (vnet/fib/fib_node.h; fib_node_type_t is one byte).
    layout!(fib_node_t, size 12, align 4, fn_type @ 0, fn_pad @ 2, fn_children @ 4, fn_locks @ 8);
    layout!(fib_node_vft_t, size 32, align 8, fnv_get @ 0, fnv_last_lock @ 8, fnv_back_walk @ 16,
        fnv_mem_show @ 24);
    layout!(kp_ip46_address_t, size 16, align 1);
}

#[test]
fn binary_api() {
    layout!(vl_msg_api_msg_config_t, size 88, align 8, id @ 0, name @ 8, crc @ 16, handler @ 24, cleanup @ 32,
        endian @ 40, format_fn @ 48, tojson @ 56, fromjson @ 64, calc_size @ 72, size @ 80, flags @ 84);
    layout!(vl_api_registration_t, size 120, align 8, registration_type @ 0, vl_input_queue @ 40);
    layout!(api_main_t, size 328, align 8, json_api_repr @ 232);
}
