/* libcryptsetup for Swift, plus inline helpers for its string and
 * UINT32_C(...) macros, which Swift cannot import. */
#ifndef ASTERISM_CCRYPTSETUP_H
#define ASTERISM_CCRYPTSETUP_H

#include <stddef.h>
#include <stdint.h>
#include <libcryptsetup.h>

/* ---- Device types (string macros) ---- */
static inline const char *asterism_crypt_luks2(void) { return CRYPT_LUKS2; }

/* ---- PBKDF types and flags ---- */
static inline const char *asterism_crypt_kdf_pbkdf2(void) { return CRYPT_KDF_PBKDF2; }
static inline const char *asterism_crypt_kdf_argon2id(void) { return CRYPT_KDF_ARGON2ID; }
static inline uint32_t asterism_crypt_pbkdf_no_benchmark(void) { return CRYPT_PBKDF_NO_BENCHMARK; }

/* ---- Slots and tokens ---- */
static inline int asterism_crypt_any_slot(void) { return CRYPT_ANY_SLOT; }
static inline int asterism_crypt_any_token(void) { return CRYPT_ANY_TOKEN; }

/* ---- Volume key flags ---- */

/* ---- Activation / deactivation flags ---- */

/* ---- Requirements and wipe ---- */

/* ---- Keyslot context types (INT16_C macros) ---- */

#endif
