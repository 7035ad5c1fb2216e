package dev.nbd.server;

import java.nio.ByteBuffer;

import dev.nbd.backend.ExportBackend;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
import io.netty.buffer.CompositeByteBuf;
import io.netty.buffer.Unpooled;

/**
 * The data of a READ reply lent by the backend ({@link ExportBackend#lend}): the backend's own
 * buffers as one {@link ByteBuf} that the socket writes from directly (a gathering write). The
 * loan ends when Netty releases the buffer, once the reply is sent or dropped.
 */
final class LentData extends CompositeByteBuf {

	private final ExportBackend.Lent lent;

	private LentData(ByteBufAllocator alloc, ExportBackend.Lent lent, ByteBuf[] components) {
		super(alloc, true, Math.max(components.length, 1), components);
		this.lent = lent;
	}

	/** Wraps a loan of exactly {@code length} bytes; ends the loan and fails if it is not. */
	static ByteBuf of(ByteBufAllocator alloc, ExportBackend.Lent lent, int length) throws UnfilledReadException {
		ByteBuf[] components;
		try {
			ByteBuffer[] buffers = lent.buffers();
			components = new ByteBuf[buffers.length];
			long total = 0;
			for (int i = 0; i < buffers.length; i++) {
				total += buffers[i].remaining();
				components[i] = Unpooled.wrappedBuffer(buffers[i]);
			}
			if (total != length) {
				throw new UnfilledReadException("lend for a read of " + length + " bytes lent " + total);
			}
		}
		catch (UnfilledReadException | RuntimeException | Error ex) {
			lent.release();
			throw ex;
		}
		return new LentData(alloc, lent, components);
	}

	@Override
	protected void deallocate() {
		try {
			super.deallocate();
		}
		finally {
			this.lent.release();
		}
	}

}
