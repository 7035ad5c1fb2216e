package dev.nbd.protocol;

import io.netty.buffer.ByteBuf;
import io.netty.util.AbstractReferenceCounted;
import io.netty.util.ReferenceCounted;

/** Messages the decoders produce from client bytes. */
public sealed interface ProtocolMessage {

	/** The client's 32-bit flags, sent once after the server greeting. */
	record ClientFlags(int flags) implements ProtocolMessage {
	}

	/**
	 * One option of the haggling phase. {@code data} is null when the option was longer than
	 * the decoder's bound: its bytes were discarded, not buffered.
	 */
	record Option(int option, long length, ByteBuf data) implements ProtocolMessage {

		public boolean oversized() {
			return this.data == null;
		}

		public void release() {
			if (this.data != null) {
				this.data.release();
			}
		}

	}

	/**
	 * One transmission request. {@code payload} holds the data of a WRITE; it is null for other
	 * commands and for a WRITE longer than the payload bound, whose bytes were discarded.
	 */
	final class Request extends AbstractReferenceCounted implements ProtocolMessage {

		private final int flags;

		private final int type;

		private final long cookie;

		private final long offset;

		private final long length;

		private final ByteBuf payload;

		public Request(int flags, int type, long cookie, long offset, long length, ByteBuf payload) {
			this.flags = flags;
			this.type = type;
			this.cookie = cookie;
			this.offset = offset;
			this.length = length;
			this.payload = payload;
		}

		public int flags() {
			return this.flags;
		}

		public int type() {
			return this.type;
		}

		public long cookie() {
			return this.cookie;
		}

		public long offset() {
			return this.offset;
		}

		/** Length as sent: an unsigned 32-bit value. */
		public long length() {
			return this.length;
		}

		public ByteBuf payload() {
			return this.payload;
		}

		public boolean payloadDiscarded() {
			return this.type == NbdProtocol.CMD_WRITE && this.payload == null;
		}

		public boolean hasFlag(int flag) {
			return (this.flags & flag) != 0;
		}

		@Override
		protected void deallocate() {
			if (this.payload != null) {
				this.payload.release();
			}
		}

		@Override
		public ReferenceCounted touch(Object hint) {
			return this;
		}

		@Override
		public String toString() {
			return NbdProtocol.commandName(this.type) + "[cookie=" + this.cookie + ", offset=" + this.offset
					+ ", length=" + this.length + ", flags=" + this.flags + "]";
		}

	}

	/** Input that breaks the framing; the connection cannot continue. */
	record Violation(String reason) implements ProtocolMessage {
	}

}
