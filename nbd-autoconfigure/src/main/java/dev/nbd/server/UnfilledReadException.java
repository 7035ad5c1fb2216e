package dev.nbd.server;

import java.nio.ByteBuffer;

import dev.nbd.backend.NbdBackendException;
import dev.nbd.protocol.NbdError;

/**
 * A backend broke the read contract: it left part of the buffer unfilled, or lent a different
 * length than asked. The rest of that (pooled) buffer holds whatever it held before, possibly
 * another export's data, so the request fails with NBD_EIO and none of its bytes are sent.
 */
final class UnfilledReadException extends NbdBackendException {

	UnfilledReadException(String message) {
		super(NbdError.EIO, message);
	}

	/**
	 * Checks that {@link dev.nbd.backend.ExportBackend#read} filled {@code dst} up to {@code end},
	 * its limit when handed over: position at that limit, limit unchanged.
	 */
	static void check(ByteBuffer dst, int end, long offset, int length) throws UnfilledReadException {
		if (dst.position() != end || dst.limit() != end) {
			int filled = length - (end - dst.position());
			throw new UnfilledReadException("read of " + length + " bytes at " + offset + " returned with "
					+ ((dst.limit() != end) ? "the buffer's limit moved" : "only " + filled + " filled"));
		}
	}

}
