package dev.nbd.backend;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Set;

import com.sun.jna.LastErrorException;
import com.sun.jna.Native;
import com.sun.jna.Platform;

import dev.nbd.protocol.NbdError;

/**
 * The Linux system calls a sparse file backend needs and Java lacks: {@code fallocate} (punch a
 * hole, zero a range, allocate) and {@code lseek} with {@code SEEK_DATA}/{@code SEEK_HOLE}.
 *
 * <p>Why JNA: the project's baseline is Java 17, where the foreign-function API is not final
 * (it is from Java 22), and hand-written JNI would mean C to build for each platform. JNA is
 * maintained, ships its small dispatch library for every common platform inside its jar, and
 * its direct mapping ({@link Native#register}) calls a function for about the cost of a JNI
 * call. The calls work on a descriptor of our own ({@code open} by path), because Java does not
 * expose a {@code FileChannel}'s descriptor; every call here acts on the file (the inode), not
 * on the descriptor's offset, so any descriptor of the same file will do.
 *
 * <p>Only 64-bit Linux on architectures with the generic errno numbers: there {@code off_t} is
 * 64 bits in glibc and musl alike and the constants below hold. Elsewhere {@link #unavailable()}
 * says why and the backend falls back to plain Java.
 */
final class LinuxFileCalls {

	static final int FALLOC_FL_KEEP_SIZE = 0x01;

	static final int FALLOC_FL_PUNCH_HOLE = 0x02;

	static final int FALLOC_FL_ZERO_RANGE = 0x10;

	static final int SEEK_DATA = 3;

	static final int SEEK_HOLE = 4;

	static final int EPERM = 1;

	static final int EINTR = 4;

	static final int ENXIO = 6;

	static final int EACCES = 13;

	static final int EINVAL = 22;

	static final int EFBIG = 27;

	static final int ENOSPC = 28;

	static final int EROFS = 30;

	static final int ENOSYS = 38;

	static final int EOPNOTSUPP = 95;

	static final int EDQUOT = 122;

	private static final int O_RDONLY = 0;

	private static final int O_RDWR = 2;

	/** Architectures whose errno numbers and flags are the generic ones used above. */
	private static final Set<String> ARCHITECTURES = Set.of("x86-64", "aarch64", "riscv64", "ppc64le", "s390x",
			"loongarch64");

	private static final String UNAVAILABLE;

	static {
		String reason = null;
		try {
			if (!Platform.isLinux() || !Platform.is64Bit() || !ARCHITECTURES.contains(Platform.ARCH)) {
				reason = "not 64-bit Linux on a known architecture (" + System.getProperty("os.name") + " "
						+ Platform.ARCH + ")";
			}
			else {
				Native.register(LinuxFileCalls.class, Platform.C_LIBRARY_NAME);
			}
		}
		catch (LinkageError | RuntimeException ex) {
			reason = "JNA unavailable: " + ex;
		}
		UNAVAILABLE = reason;
	}

	private LinuxFileCalls() {
	}

	/** Why the calls cannot be used here, or null when they can. */
	static String unavailable() {
		return UNAVAILABLE;
	}

	// open(2) is variadic; without O_CREAT the mode is not read, so the fixed prototype is safe.
	private static native int open(String path, int flags) throws LastErrorException;

	private static native int close(int fd) throws LastErrorException;

	private static native int fallocate(int fd, int mode, long offset, long length) throws LastErrorException;

	private static native long lseek(int fd, long offset, int whence) throws LastErrorException;

	/** Opens {@code path} (which must exist) for these calls: read-write when {@code write}. */
	static Descriptor open(Path path, boolean write) throws IOException {
		if (UNAVAILABLE != null) {
			throw new IOException(UNAVAILABLE);
		}
		while (true) {
			try {
				return new Descriptor(open(path.toString(), write ? O_RDWR : O_RDONLY));
			}
			catch (LastErrorException ex) {
				if (ex.getErrorCode() != EINTR) {
					throw new ErrnoException("open " + path, ex.getErrorCode());
				}
			}
		}
	}

	/** A failed call and its errno. */
	static final class ErrnoException extends IOException {

		private final int errno;

		ErrnoException(String call, int errno) {
			super(call + " failed: errno " + errno + " (" + describe(errno) + ")");
			this.errno = errno;
		}

		int errno() {
			return this.errno;
		}

		/** The NBD error a client sees for this failure. */
		NbdError nbdError() {
			return switch (this.errno) {
				case ENOSPC, EDQUOT, EFBIG -> NbdError.ENOSPC;
				case EPERM, EACCES, EROFS -> NbdError.EPERM;
				default -> NbdError.EIO;
			};
		}

		/** Whether the filesystem (or kernel) lacks the operation, as opposed to failing it. */
		boolean unsupported() {
			return this.errno == EOPNOTSUPP || this.errno == ENOSYS;
		}

		private static String describe(int errno) {
			return switch (errno) {
				case ENXIO -> "ENXIO";
				case EINVAL -> "EINVAL";
				case ENOSPC -> "ENOSPC";
				case ENOSYS -> "ENOSYS";
				case EOPNOTSUPP -> "EOPNOTSUPP: not supported by this filesystem";
				default -> "see errno(3)";
			};
		}

	}

	/** An open descriptor; thread-safe (no call depends on the descriptor's offset). */
	static final class Descriptor implements AutoCloseable {

		private final int fd;

		private Descriptor(int fd) {
			this.fd = fd;
		}

		/** {@code fallocate(fd, mode, offset, length)}, retried on EINTR. */
		void fallocate(int mode, long offset, long length) throws ErrnoException {
			while (true) {
				try {
					LinuxFileCalls.fallocate(this.fd, mode, offset, length);
					return;
				}
				catch (LastErrorException ex) {
					if (ex.getErrorCode() != EINTR) {
						throw new ErrnoException("fallocate(mode 0x" + Integer.toHexString(mode) + ")",
								ex.getErrorCode());
					}
				}
			}
		}

		/**
		 * {@code lseek(fd, offset, whence)} for SEEK_DATA/SEEK_HOLE: the next data (or hole) at
		 * or after {@code offset}, or -1 when there is none before the end of the file (ENXIO).
		 */
		long seek(long offset, int whence) throws ErrnoException {
			try {
				return LinuxFileCalls.lseek(this.fd, offset, whence);
			}
			catch (LastErrorException ex) {
				if (ex.getErrorCode() == ENXIO) {
					return -1;
				}
				throw new ErrnoException((whence == SEEK_DATA) ? "lseek(SEEK_DATA)" : "lseek(SEEK_HOLE)",
						ex.getErrorCode());
			}
		}

		@Override
		public void close() throws IOException {
			try {
				LinuxFileCalls.close(this.fd);
			}
			catch (LastErrorException ex) {
				throw new ErrnoException("close", ex.getErrorCode());
			}
		}

	}

}
