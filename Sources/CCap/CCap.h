/* libcap for Swift. The CAP_* numbers come from <linux/capability.h> as plain
 * integer macros (imported as Int32, the type of cap_value_t); the helpers below
 * cover what is a function-like macro or missing on older libcap. */
#ifndef ASTERISM_CCAP_H
#define ASTERISM_CCAP_H

#include <sys/capability.h>
#include <linux/capability.h>

/** The highest capability number these headers know (CAP_LAST_CAP). The running
 *  kernel may know more or fewer: read /proc/sys/kernel/cap_last_cap for that. */
static inline cap_value_t asterism_cap_last_cap_compiled(void) { return CAP_LAST_CAP; }

/** CAP_IS_SUPPORTED(cap): whether the running kernel knows this capability. */
static inline int asterism_cap_is_supported(cap_value_t cap) { return CAP_IS_SUPPORTED(cap); }

/** The three cap_flag_t values as plain integers. */
static inline cap_flag_t asterism_cap_effective(void) { return CAP_EFFECTIVE; }
static inline cap_flag_t asterism_cap_permitted(void) { return CAP_PERMITTED; }
static inline cap_flag_t asterism_cap_inheritable(void) { return CAP_INHERITABLE; }
static inline cap_flag_value_t asterism_cap_set(void) { return CAP_SET; }
static inline cap_flag_value_t asterism_cap_clear(void) { return CAP_CLEAR; }

#endif
