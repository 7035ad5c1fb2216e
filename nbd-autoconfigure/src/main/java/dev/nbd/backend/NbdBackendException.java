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

	public NbdError error() {
		return this.error;
	}

}
