/// Attested TLS: certificates that carry attestation evidence bound to their key.
