/* libcap for Swift. The CAP_* numbers come from <linux/capability.h> as plain
 * integer macros (imported as Int32, the type of cap_value_t); libcap's functions
 * are called directly. */
#ifndef ASTERISM_CCAP_H
#define ASTERISM_CCAP_H

#include <sys/capability.h>
#include <linux/capability.h>

#endif
