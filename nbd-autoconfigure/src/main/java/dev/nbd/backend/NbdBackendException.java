package dev.nbd.backend;

import java.io.IOException;

import dev.nbd.protocol.NbdError;

/** An I/O failure that maps to a specific NBD error value. */
public class NbdBackendException extends IOException {

	private final NbdError error;

	public NbdBackendException(NbdError error, String message) {
		super(message);
		this.error = error;
	}

	/** A failure of {@code cause} reported to the client as {@code error}. */
	public NbdBackendException(NbdError error, String message, Throwable cause) {
		super(message, cause);
		this.error = error;
	}

	public NbdError error() {
		return this.error;
	}

}
