/* The VPP ABI kp uses, for bindgen (build.rs). Every declaration is kp's
 * own, in vpp-headers/, written from measured facts about VPP 26.06. */
#include "vpp-headers/vppinfra.h"
#include "vpp-headers/vlib.h"
#include "vpp-headers/vnet.h"
#include "vpp-headers/vlibapi.h"
