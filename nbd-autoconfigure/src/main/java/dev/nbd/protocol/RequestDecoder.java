package dev.nbd.protocol;

import java.util.List;

import io.netty.buffer.ByteBuf;
import io.netty.channel.ChannelHandlerContext;

/**
 * Frames transmission requests: a 28-byte header, then the payload of a WRITE. A WRITE whose
 * length exceeds {@code maxPayload} is not buffered: its bytes are discarded as they arrive and
 * the request is passed on without payload, so the server can answer it with an error and keep
 * the connection in sync. A bad magic cannot be resynchronised and ends the stream.
 *
 * <p>A payload that has fully arrived is passed on as a slice of the received bytes (no copy);
 * one still arriving is gathered into a buffer of its own, so the decoder's cumulation is not
 * grown and copied again with every socket read of a large WRITE.
 */
public class RequestDecoder extends SkippingDecoder {

	private enum State {
		HEADER, PAYLOAD, SKIP, FAILED
	}

	private final int maxPayload;

	private State state = State.HEADER;

	private int flags;

	private int type;

	private long cookie;

	private long offset;

	private long length;

	/** Payload of the WRITE being gathered, or null. */
	private ByteBuf payload;

	public RequestDecoder(int maxPayload) {
		this.maxPayload = maxPayload;
	}

	@Override
	protected void decode(ChannelHandlerContext ctx, ByteBuf in, List<Object> out) {
		while (true) {
			switch (this.state) {
				case HEADER -> {
					if (in.readableBytes() < NbdProtocol.REQUEST_HEADER_LENGTH) {
						return;
					}
					int magic = in.readInt();
					if (magic != NbdProtocol.REQUEST_MAGIC) {
						this.state = State.FAILED;
						in.skipBytes(in.readableBytes());
						out.add(new ProtocolMessage.Violation("bad request magic 0x" + Integer.toHexString(magic)));
						return;
					}
					this.flags = in.readUnsignedShort();
					this.type = in.readUnsignedShort();
					this.cookie = in.readLong();
					this.offset = in.readLong();
					this.length = in.readUnsignedInt();
					if (this.type != NbdProtocol.CMD_WRITE) {
						out.add(new ProtocolMessage.Request(this.flags, this.type, this.cookie, this.offset, this.length,
								null));
					}
					else if (this.length > this.maxPayload) {
						skip(this.length);
						this.state = State.SKIP;
					}
					else {
						this.state = State.PAYLOAD;
					}
				}
				case PAYLOAD -> {
					ByteBuf data;
					if (this.payload == null && in.readableBytes() >= this.length) {
						data = in.readRetainedSlice((int) this.length);
					}
					else {
						if (this.payload == null) {
							if (!in.isReadable()) {
								return;
							}
							this.payload = ctx.alloc().directBuffer((int) this.length);
						}
						this.payload.writeBytes(in, Math.min(in.readableBytes(), this.payload.writableBytes()));
						if (this.payload.isWritable()) {
							return;
						}
						data = this.payload;
						this.payload = null;
					}
					this.state = State.HEADER;
					out.add(new ProtocolMessage.Request(this.flags, this.type, this.cookie, this.offset, this.length,
							data));
				}
				case SKIP -> {
					if (!skipped(in)) {
						return;
					}
					this.state = State.HEADER;
					out.add(new ProtocolMessage.Request(this.flags, this.type, this.cookie, this.offset, this.length,
							null));
				}
				case FAILED -> {
					in.skipBytes(in.readableBytes());
					return;
				}
			}
		}
	}

	@Override
	protected void handlerRemoved0(ChannelHandlerContext ctx) {
		if (this.payload != null) {
			this.payload.release();
			this.payload = null;
		}
	}

}
