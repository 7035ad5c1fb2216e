package dev.nbd.server;

import java.util.List;

/**
 * What the server enforces for one export above its backend, whatever the backend is: the
 * backend stores bytes, the policy decides who may use them and how.
 *
 * <p>Precedence over the backend's own declarations: a value set here wins, except
 * {@code readOnly}, which is OR-ed (a backend that declares itself read-only stays read-only).
 * Unset values ({@code null} description, block size 0) leave the backend's declaration.
 *
 * @param readOnly refuse write-type commands with {@code NBD_EPERM} and advertise
 * {@code NBD_FLAG_READ_ONLY}, even if the backend could write
 * @param description sent as {@code NBD_INFO_DESCRIPTION} and in export lists; null for the
 * backend's
 * @param minimumBlockSize smallest I/O unit (power of two, 1 to 65536): unaligned requests get
 * {@code NBD_EINVAL}; 0 for the backend's
 * @param preferredBlockSize preferred I/O size hint (power of two, at least 512 and at least
 * the minimum); 0 for the backend's
 * @param multiConn multi-connection mode
 * @param allowedAddresses clients allowed to use the export (on top of the server's own list);
 * empty for all
 * @param eventLoopIo where reads and plain writes of the backend's served file run (only for
 * backends with a {@code servedFile()}); null for {@link EventLoopIo#ADAPTIVE}
 */
public record ExportPolicy(boolean readOnly, String description, int minimumBlockSize, int preferredBlockSize,
		MultiConnMode multiConn, List<Cidr> allowedAddresses, EventLoopIo eventLoopIo) {

	/** No restriction beyond what the backend declares. */
	public static final ExportPolicy DEFAULT = builder().build();

	/** Largest minimum block size the protocol allows. */
	public static final int MAX_MINIMUM_BLOCK_SIZE = 64 * 1024;

	public ExportPolicy {
		if (minimumBlockSize != 0) {
			checkMinimumBlockSize(minimumBlockSize);
		}
		if (preferredBlockSize != 0) {
			checkPreferredBlockSize(preferredBlockSize, Math.max(minimumBlockSize, 1));
		}
		multiConn = (multiConn != null) ? multiConn : MultiConnMode.AUTO;
		allowedAddresses = (allowedAddresses != null) ? List.copyOf(allowedAddresses) : List.of();
		eventLoopIo = (eventLoopIo != null) ? eventLoopIo : EventLoopIo.ADAPTIVE;
	}

	/** Throws unless {@code size} is a valid minimum block size (power of two, 1 to 64 KiB). */
	public static void checkMinimumBlockSize(int size) {
		if (size < 1 || size > MAX_MINIMUM_BLOCK_SIZE || Integer.bitCount(size) != 1) {
			throw new IllegalArgumentException(
					"minimum block size must be a power of two from 1 to 65536 bytes, was " + size);
		}
	}

	/**
	 * Throws unless {@code size} is a valid preferred block size for {@code minimum}: a power of
	 * two of at least 512 and at least the minimum block size.
	 */
	public static void checkPreferredBlockSize(int size, int minimum) {
		if (size < Math.max(512, minimum) || Integer.bitCount(size) != 1) {
			throw new IllegalArgumentException("preferred block size must be a power of two of at least 512 bytes"
					+ ((minimum > 512) ? " and at least the minimum block size " + minimum : "") + ", was " + size);
		}
	}

	public static Builder builder() {
		return new Builder();
	}

	/** Builder; every value starts unset (the backend's declaration applies). */
	public static final class Builder {

		private boolean readOnly;

		private String description;

		private int minimumBlockSize;

		private int preferredBlockSize;

		private MultiConnMode multiConn = MultiConnMode.AUTO;

		private List<Cidr> allowedAddresses = List.of();

		private EventLoopIo eventLoopIo = EventLoopIo.ADAPTIVE;

		public Builder readOnly(boolean readOnly) {
			this.readOnly = readOnly;
			return this;
		}

		public Builder description(String description) {
			this.description = description;
			return this;
		}

		public Builder minimumBlockSize(int minimumBlockSize) {
			this.minimumBlockSize = minimumBlockSize;
			return this;
		}

		public Builder preferredBlockSize(int preferredBlockSize) {
			this.preferredBlockSize = preferredBlockSize;
			return this;
		}

		public Builder multiConn(MultiConnMode multiConn) {
			this.multiConn = multiConn;
			return this;
		}

		public Builder allowedAddresses(List<Cidr> allowedAddresses) {
			this.allowedAddresses = allowedAddresses;
			return this;
		}

		public Builder eventLoopIo(EventLoopIo eventLoopIo) {
			this.eventLoopIo = eventLoopIo;
			return this;
		}

		public ExportPolicy build() {
			return new ExportPolicy(this.readOnly, this.description, this.minimumBlockSize, this.preferredBlockSize,
					this.multiConn, this.allowedAddresses, this.eventLoopIo);
		}

	}

}
