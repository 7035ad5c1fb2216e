package dev.nbd.protocol;

import io.netty.buffer.ByteBuf;
import io.netty.handler.codec.ByteToMessageDecoder;

/**
 * A decoder that can discard an over-long frame as its bytes arrive instead of buffering it:
 * a client announcing gigabytes costs nothing, and the stream stays in sync.
 */
public abstract class SkippingDecoder extends ByteToMessageDecoder {

	private long toSkip;

	/** Bytes received and not decoded yet. */
	public int bufferedBytes() {
		return actualReadableBytes();
	}

	/** Starts discarding the next {@code length} bytes. */
	protected void skip(long length) {
		this.toSkip = length;
	}

	/** Discards what has arrived of the frame being skipped; true once all of it has. */
	protected boolean skipped(ByteBuf in) {
		int n = (int) Math.min(in.readableBytes(), this.toSkip);
		in.skipBytes(n);
		this.toSkip -= n;
		return this.toSkip == 0;
	}

}
