package dev.nbd.backend;

import java.nio.channels.NonWritableChannelException;
import java.nio.file.AccessDeniedException;
import java.nio.file.ReadOnlyFileSystemException;

import dev.nbd.protocol.NbdError;

/**
 * Which NBD error a client sees for a failure: the one place that turns exceptions into error
 * values, used by {@link FileBackend} and by the server for whatever a backend throws.
 *
 * <p>Java's {@link java.io.IOException} hides the {@code errno} of a failed system call: the JDK
 * puts its {@code strerror} text in the message ("No space left on device"), so the mapping reads
 * the exception types that carry a meaning and, failing those, the message:
 * <ul>
 * <li>{@link NbdBackendException}: the error it names;</li>
 * <li>{@code ENOSPC}, {@code EDQUOT}, {@code EFBIG} ("No space left on device", "Disk quota
 * exceeded", "File too large"): {@link NbdError#ENOSPC}, so the client knows the device is full
 * rather than broken;</li>
 * <li>{@code EROFS}, {@code EACCES}, {@code EPERM} ("Read-only file system", "Permission
 * denied", "Operation not permitted"), {@link AccessDeniedException},
 * {@link ReadOnlyFileSystemException} and {@link NonWritableChannelException}:
 * {@link NbdError#EPERM};</li>
 * <li>{@link OutOfMemoryError} (heap, or direct memory: "Cannot reserve ... direct buffer
 * memory", Netty's {@code OutOfDirectMemoryError}) and {@code ENOMEM} ("Cannot allocate
 * memory"): {@link NbdError#ENOMEM};</li>
 * <li>anything else: {@link NbdError#EIO}.</li>
 * </ul>
 * Causes are followed, so a wrapped failure maps as its cause does.
 */
public final class BackendErrors {

	private static final String[] NO_SPACE = { "No space left on device", "Disk quota exceeded", "File too large",
			"There is not enough space on the disk" };

	private static final String[] NOT_PERMITTED = { "Read-only file system", "Permission denied",
			"Operation not permitted", "Access is denied" };

	private static final String[] NO_MEMORY = { "Cannot allocate memory" };

	/** How deep to follow causes (a cycle or a very long chain ends the search). */
	private static final int MAX_DEPTH = 8;

	private BackendErrors() {
	}

	/** The NBD error for {@code failure}: {@link NbdError#EIO} unless something more exact is known. */
	public static NbdError errorOf(Throwable failure) {
		Throwable t = failure;
		for (int depth = 0; t != null && depth < MAX_DEPTH; depth++, t = t.getCause()) {
			NbdError error = ownError(t);
			if (error != null) {
				return error;
			}
		}
		return NbdError.EIO;
	}

	/**
	 * {@code failure} as an {@link NbdBackendException} carrying its mapped error, with
	 * {@code context} (what was being done, e.g. "write of 4096 bytes at 0 to /data/disk.img") in
	 * the message and {@code failure} as the cause; an {@link NbdBackendException} is returned as is.
	 */
	public static NbdBackendException translate(String context, Throwable failure) {
		if (failure instanceof NbdBackendException nbe) {
			return nbe;
		}
		return new NbdBackendException(errorOf(failure), context + " failed: " + failure, failure);
	}

	private static NbdError ownError(Throwable t) {
		if (t instanceof NbdBackendException nbe) {
			return nbe.error();
		}
		if (t instanceof OutOfMemoryError) {
			return NbdError.ENOMEM;
		}
		if (t instanceof AccessDeniedException || t instanceof ReadOnlyFileSystemException
				|| t instanceof NonWritableChannelException) {
			return NbdError.EPERM;
		}
		// FileSystemException puts the strerror text in its reason, part of getMessage().
		String message = t.getMessage();
		if (message == null) {
			return null;
		}
		if (containsAny(message, NO_SPACE)) {
			return NbdError.ENOSPC;
		}
		if (containsAny(message, NOT_PERMITTED)) {
			return NbdError.EPERM;
		}
		if (containsAny(message, NO_MEMORY)) {
			return NbdError.ENOMEM;
		}
		return null;
	}

	private static boolean containsAny(String message, String[] texts) {
		for (String text : texts) {
			if (message.contains(text)) {
				return true;
			}
		}
		return false;
	}

}
