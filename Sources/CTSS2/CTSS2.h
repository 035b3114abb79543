/* libtss2 (ESAPI, TCTI loader, marshalling, RC decoding) for Swift, plus inline
 * helpers for the macros Swift cannot import (casts, function-like macros). */
#ifndef ASTERISM_CTSS2_H
#define ASTERISM_CTSS2_H

#include <stdbool.h>
#include <stdint.h>
#include <tss2/tss2_common.h>
#include <tss2/tss2_tpm2_types.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_tctildr.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>

/* ---- TSS2_RC: layer (bits 16..23) and base code (bits 0..15) ---- */

/** TSS2_RC_SUCCESS. */
static inline TSS2_RC asterism_tss2_rc_success(void) { return TSS2_RC_SUCCESS; }

/** The marshalling layer's number, for a response code keyd makes itself. */
static inline uint8_t asterism_tss2_layer_mu(void) { return 9; }

/* ---- TPM2_RC (layer 0 or resource-manager-TPM layer): format 0 / format 1 ---- */

/** True for format-one codes (bit 7), which carry a handle, session or parameter number. */
static inline bool asterism_tpm2_rc_is_format_one(TSS2_RC rc) {
    return (rc & TPM2_RC_FMT1) != 0;
}

/** The TPM error without its handle/session/parameter number and without the layer:
 *  comparable with TPM2_RC_* values (e.g. asterism_tpm2_rc_policy_fail()). */
static inline uint16_t asterism_tpm2_rc_error(TSS2_RC rc) {
    uint16_t low = (uint16_t)(rc & 0xFFFFu);
    if (low & TPM2_RC_FMT1) return (uint16_t)(low & (TPM2_RC_FMT1 | 0x3Fu));
    return low;
}

/** A few TPM2_RC constants as functions (the macros are casts Swift may not import). */
static inline uint16_t asterism_tpm2_rc_initialize(void) { return (uint16_t)TPM2_RC_INITIALIZE; }
static inline uint16_t asterism_tpm2_rc_policy_fail(void) { return (uint16_t)TPM2_RC_POLICY_FAIL; }
static inline uint16_t asterism_tpm2_rc_pcr_changed(void) { return (uint16_t)TPM2_RC_PCR_CHANGED; }
static inline uint16_t asterism_tpm2_rc_nv_uninitialized(void) { return (uint16_t)TPM2_RC_NV_UNINITIALIZED; }

/* ---- Algorithm identifiers and handles (cast macros) ---- */

static inline TPM2_ALG_ID asterism_tpm2_alg_sha256(void) { return TPM2_ALG_SHA256; }
static inline TPM2_ALG_ID asterism_tpm2_alg_rsa(void) { return TPM2_ALG_RSA; }
static inline TPM2_ALG_ID asterism_tpm2_alg_ecc(void) { return TPM2_ALG_ECC; }
static inline TPM2_ALG_ID asterism_tpm2_alg_ecdsa(void) { return TPM2_ALG_ECDSA; }
static inline TPM2_ALG_ID asterism_tpm2_alg_rsassa(void) { return TPM2_ALG_RSASSA; }
static inline TPM2_ALG_ID asterism_tpm2_alg_aes(void) { return TPM2_ALG_AES; }
static inline TPM2_ALG_ID asterism_tpm2_alg_cfb(void) { return TPM2_ALG_CFB; }
static inline TPM2_ALG_ID asterism_tpm2_alg_null(void) { return TPM2_ALG_NULL; }
static inline TPM2_ECC_CURVE asterism_tpm2_ecc_nist_p256(void) { return TPM2_ECC_NIST_P256; }

static inline ESYS_TR asterism_esys_tr_none(void) { return ESYS_TR_NONE; }
static inline ESYS_TR asterism_esys_tr_password(void) { return ESYS_TR_PASSWORD; }
static inline ESYS_TR asterism_esys_tr_rh_owner(void) { return ESYS_TR_RH_OWNER; }
static inline ESYS_TR asterism_esys_tr_pcr(uint32_t index) { return (ESYS_TR)(ESYS_TR_PCR0 + index); }

/* ---- Object, session and startup constants (cast macros) ---- */

static inline TPM2_SU asterism_tpm2_su_clear(void) { return TPM2_SU_CLEAR; }
static inline TPM2_SE asterism_tpm2_se_hmac(void) { return TPM2_SE_HMAC; }
static inline TPM2_SE asterism_tpm2_se_policy(void) { return TPM2_SE_POLICY; }
static inline TPM2_SE asterism_tpm2_se_trial(void) { return TPM2_SE_TRIAL; }
static inline TPM2_ALG_ID asterism_tpm2_alg_keyedhash(void) { return TPM2_ALG_KEYEDHASH; }
static inline TPM2_CAP asterism_tpm2_cap_handles(void) { return TPM2_CAP_HANDLES; }
static inline uint32_t asterism_tpm2_transient_first(void) { return TPM2_TRANSIENT_FIRST; }
static inline uint32_t asterism_tpm2_loaded_session_first(void) { return TPM2_LOADED_SESSION_FIRST; }

/** Attributes of a restricted signing key (the attestation key): fixedTPM, fixedParent,
 *  sensitiveDataOrigin, userWithAuth, noDA, restricted, sign. */
static inline TPMA_OBJECT asterism_tpma_attestation_key(void) {
    return TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN |
           TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_NODA | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_SIGN_ENCRYPT;
}

/** Attributes of a restricted decryption key (the storage primary): fixedTPM, fixedParent,
 *  sensitiveDataOrigin, userWithAuth, noDA, restricted, decrypt. */
static inline TPMA_OBJECT asterism_tpma_storage_key(void) {
    return TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN |
           TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_NODA | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;
}

/** Attributes of a sealed data object usable only through its policy: fixedTPM, fixedParent, noDA
 *  (no userWithAuth, so the empty auth value alone does not unseal it). */
static inline TPMA_OBJECT asterism_tpma_sealed_data(void) {
    return TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_NODA;
}

/** Attributes of keyd's NV counter: TPM_NT_COUNTER, written and read with its (empty) auth value,
 *  outside the dictionary-attack logic. A counter never goes back, and a redefined one starts at
 *  the highest value any counter of this TPM reached. */
static inline TPMA_NV asterism_tpma_nv_counter(void) {
    return (TPM2_NT_COUNTER << TPMA_NV_TPM2_NT_SHIFT) | TPMA_NV_AUTHWRITE | TPMA_NV_AUTHREAD | TPMA_NV_NO_DA;
}

/** Session attributes: continueSession, decrypt (first command parameter encrypted), encrypt
 *  (first response parameter encrypted), and the mask of all three. */
static inline TPMA_SESSION asterism_tpma_session_continue(void) { return TPMA_SESSION_CONTINUESESSION; }
static inline TPMA_SESSION asterism_tpma_session_decrypt(void) { return TPMA_SESSION_DECRYPT; }
static inline TPMA_SESSION asterism_tpma_session_encrypt(void) { return TPMA_SESSION_ENCRYPT; }
static inline TPMA_SESSION asterism_tpma_session_all(void) {
    return TPMA_SESSION_CONTINUESESSION | TPMA_SESSION_DECRYPT | TPMA_SESSION_ENCRYPT;
}

#endif
