/* libcryptsetup for Swift, plus inline helpers for its string and
 * UINT32_C(...) macros, which Swift cannot import. */
#ifndef ASTERISM_CCRYPTSETUP_H
#define ASTERISM_CCRYPTSETUP_H

#include <stddef.h>
#include <stdint.h>
#include <libcryptsetup.h>

/* ---- Device types (string macros) ---- */
static inline const char *asterism_crypt_luks2(void) { return CRYPT_LUKS2; }
static inline const char *asterism_crypt_luks1(void) { return CRYPT_LUKS1; }
static inline const char *asterism_crypt_plain(void) { return CRYPT_PLAIN; }
/** CRYPT_LUKS: NULL, meaning "any LUKS version" for crypt_load. */
static inline const char *asterism_crypt_luks_any(void) { return CRYPT_LUKS; }

/* ---- PBKDF types and flags ---- */
static inline const char *asterism_crypt_kdf_pbkdf2(void) { return CRYPT_KDF_PBKDF2; }
static inline const char *asterism_crypt_kdf_argon2i(void) { return CRYPT_KDF_ARGON2I; }
static inline const char *asterism_crypt_kdf_argon2id(void) { return CRYPT_KDF_ARGON2ID; }
static inline uint32_t asterism_crypt_pbkdf_iter_time_set(void) { return CRYPT_PBKDF_ITER_TIME_SET; }
static inline uint32_t asterism_crypt_pbkdf_no_benchmark(void) { return CRYPT_PBKDF_NO_BENCHMARK; }

/* ---- Slots and tokens ---- */
static inline int asterism_crypt_any_slot(void) { return CRYPT_ANY_SLOT; }
static inline int asterism_crypt_any_token(void) { return CRYPT_ANY_TOKEN; }

/* ---- Volume key flags ---- */
static inline uint32_t asterism_crypt_volume_key_no_segment(void) { return CRYPT_VOLUME_KEY_NO_SEGMENT; }
static inline uint32_t asterism_crypt_volume_key_set(void) { return CRYPT_VOLUME_KEY_SET; }
static inline uint32_t asterism_crypt_volume_key_digest_reuse(void) { return CRYPT_VOLUME_KEY_DIGEST_REUSE; }

/* ---- Activation / deactivation flags ---- */
static inline uint32_t asterism_crypt_activate_readonly(void) { return CRYPT_ACTIVATE_READONLY; }
static inline uint32_t asterism_crypt_activate_allow_discards(void) { return CRYPT_ACTIVATE_ALLOW_DISCARDS; }
static inline uint32_t asterism_crypt_activate_keyring_key(void) { return CRYPT_ACTIVATE_KEYRING_KEY; }
static inline uint32_t asterism_crypt_activate_no_read_workqueue(void) { return CRYPT_ACTIVATE_NO_READ_WORKQUEUE; }
static inline uint32_t asterism_crypt_activate_no_write_workqueue(void) { return CRYPT_ACTIVATE_NO_WRITE_WORKQUEUE; }
static inline uint32_t asterism_crypt_deactivate_deferred(void) { return CRYPT_DEACTIVATE_DEFERRED; }
static inline uint32_t asterism_crypt_deactivate_force(void) { return CRYPT_DEACTIVATE_FORCE; }

/* ---- Requirements and wipe ---- */
static inline uint32_t asterism_crypt_requirement_offline_reencrypt(void) { return CRYPT_REQUIREMENT_OFFLINE_REENCRYPT; }
static inline uint32_t asterism_crypt_requirement_online_reencrypt(void) { return CRYPT_REQUIREMENT_ONLINE_REENCRYPT; }
static inline uint32_t asterism_crypt_requirement_unknown(void) { return CRYPT_REQUIREMENT_UNKNOWN; }
static inline uint32_t asterism_crypt_wipe_no_direct_io(void) { return CRYPT_WIPE_NO_DIRECT_IO; }

/* ---- Keyslot context types (INT16_C macros) ---- */
static inline int asterism_crypt_kc_type_passphrase(void) { return CRYPT_KC_TYPE_PASSPHRASE; }
static inline int asterism_crypt_kc_type_key(void) { return CRYPT_KC_TYPE_KEY; }

#endif
