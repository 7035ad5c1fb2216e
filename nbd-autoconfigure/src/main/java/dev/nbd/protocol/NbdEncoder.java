package dev.nbd.protocol;

import java.nio.charset.StandardCharsets;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;

/** Builds the server's side of the wire: greeting, option replies, transmission replies. */
public final class NbdEncoder {

	private NbdEncoder() {
	}

	public static ByteBuf greeting(ByteBufAllocator alloc) {
		ByteBuf buf = alloc.buffer(18);
		buf.writeLong(NbdProtocol.NBDMAGIC);
		buf.writeLong(NbdProtocol.IHAVEOPT);
		buf.writeShort(NbdProtocol.FLAG_FIXED_NEWSTYLE | NbdProtocol.FLAG_NO_ZEROES);
		return buf;
	}

	public static ByteBuf optionReply(ByteBufAllocator alloc, int option, int replyType, ByteBuf data) {
		int len = (data != null) ? data.readableBytes() : 0;
		ByteBuf buf = alloc.buffer(20 + len);
		buf.writeLong(NbdProtocol.OPTION_REPLY_MAGIC);
		buf.writeInt(option);
		buf.writeInt(replyType);
		buf.writeInt(len);
		if (data != null) {
			buf.writeBytes(data);
			data.release();
		}
		return buf;
	}

	/** An error reply carrying a human-readable message, as the spec allows. */
	public static ByteBuf optionError(ByteBufAllocator alloc, int option, int errorType, String message) {
		ByteBuf data = alloc.buffer();
		data.writeCharSequence(message, StandardCharsets.UTF_8);
		return optionReply(alloc, option, errorType, data);
	}

	public static ByteBuf serverEntry(ByteBufAllocator alloc, int option, String name, String description) {
		byte[] n = name.getBytes(StandardCharsets.UTF_8);
		ByteBuf data = alloc.buffer();
		data.writeInt(n.length);
		data.writeBytes(n);
		if (description != null) {
			data.writeCharSequence(description, StandardCharsets.UTF_8);
		}
		return optionReply(alloc, option, NbdProtocol.REP_SERVER, data);
	}

	public static ByteBuf infoExport(ByteBufAllocator alloc, int option, long size, int transmissionFlags) {
		ByteBuf data = alloc.buffer(12);
		data.writeShort(NbdProtocol.INFO_EXPORT);
		data.writeLong(size);
		data.writeShort(transmissionFlags);
		return optionReply(alloc, option, NbdProtocol.REP_INFO, data);
	}

	public static ByteBuf infoString(ByteBufAllocator alloc, int option, int infoType, String value) {
		ByteBuf data = alloc.buffer();
		data.writeShort(infoType);
		data.writeCharSequence(value, StandardCharsets.UTF_8);
		return optionReply(alloc, option, NbdProtocol.REP_INFO, data);
	}

	public static ByteBuf infoBlockSize(ByteBufAllocator alloc, int option, int min, int preferred, int max) {
		ByteBuf data = alloc.buffer(14);
		data.writeShort(NbdProtocol.INFO_BLOCK_SIZE);
		data.writeInt(min);
		data.writeInt(preferred);
		data.writeInt(max);
		return optionReply(alloc, option, NbdProtocol.REP_INFO, data);
	}

	public static ByteBuf metaContext(ByteBufAllocator alloc, int option, int contextId, String name) {
		ByteBuf data = alloc.buffer();
		data.writeInt(contextId);
		data.writeCharSequence(name, StandardCharsets.UTF_8);
		return optionReply(alloc, option, NbdProtocol.REP_META_CONTEXT, data);
	}

	/** Reply to {@code NBD_OPT_EXPORT_NAME}: size, flags and, unless NO_ZEROES, 124 zero bytes. */
	public static ByteBuf exportNameReply(ByteBufAllocator alloc, long size, int transmissionFlags, boolean noZeroes) {
		ByteBuf buf = alloc.buffer(noZeroes ? 10 : 134);
		buf.writeLong(size);
		buf.writeShort(transmissionFlags);
		if (!noZeroes) {
			buf.writeZero(124);
		}
		return buf;
	}

	public static ByteBuf simpleReply(ByteBufAllocator alloc, long cookie, int error) {
		ByteBuf buf = alloc.directBuffer(16);
		writeSimpleReply(buf, cookie, error);
		return buf;
	}

	public static void writeSimpleReply(ByteBuf buf, long cookie, int error) {
		buf.writeInt(NbdProtocol.SIMPLE_REPLY_MAGIC);
		buf.writeInt(error);
		buf.writeLong(cookie);
	}

	/** Header of one structured reply chunk; {@code length} counts the chunk's payload. */
	public static void writeChunkHeader(ByteBuf buf, int flags, int type, long cookie, int length) {
		buf.writeInt(NbdProtocol.STRUCTURED_REPLY_MAGIC);
		buf.writeShort(flags);
		buf.writeShort(type);
		buf.writeLong(cookie);
		buf.writeInt(length);
	}

	/** An {@code NBD_REPLY_TYPE_ERROR} chunk that ends the reply. */
	public static ByteBuf errorChunk(ByteBufAllocator alloc, long cookie, int error, String message) {
		byte[] msg = (message != null) ? message.getBytes(StandardCharsets.UTF_8) : new byte[0];
		ByteBuf buf = alloc.buffer(20 + 6 + msg.length);
		writeChunkHeader(buf, NbdProtocol.REPLY_FLAG_DONE, NbdProtocol.REPLY_TYPE_ERROR, cookie, 6 + msg.length);
		buf.writeInt(error);
		buf.writeShort(msg.length);
		buf.writeBytes(msg);
		return buf;
	}

	public static ByteBuf holeChunk(ByteBufAllocator alloc, long cookie, boolean done, long offset, int length) {
		ByteBuf buf = alloc.buffer(32);
		writeChunkHeader(buf, done ? NbdProtocol.REPLY_FLAG_DONE : 0, NbdProtocol.REPLY_TYPE_OFFSET_HOLE, cookie, 12);
		buf.writeLong(offset);
		buf.writeInt(length);
		return buf;
	}

	/** Header (and offset) of an OFFSET_DATA chunk; the data follows in its own buffer. */
	public static ByteBuf dataChunkHeader(ByteBufAllocator alloc, long cookie, boolean done, long offset,
			int dataLength) {
		ByteBuf buf = alloc.directBuffer(28);
		writeChunkHeader(buf, done ? NbdProtocol.REPLY_FLAG_DONE : 0, NbdProtocol.REPLY_TYPE_OFFSET_DATA, cookie,
				8 + dataLength);
		buf.writeLong(offset);
		return buf;
	}

	public static ByteBuf noneChunk(ByteBufAllocator alloc, long cookie) {
		ByteBuf buf = alloc.buffer(20);
		writeChunkHeader(buf, NbdProtocol.REPLY_FLAG_DONE, NbdProtocol.REPLY_TYPE_NONE, cookie, 0);
		return buf;
	}

	/** A BLOCK_STATUS chunk with (length, flags) descriptor pairs. */
	public static ByteBuf blockStatusChunk(ByteBufAllocator alloc, long cookie, int contextId, long[] lengths,
			int[] flags, int count) {
		ByteBuf buf = alloc.buffer(24 + 8 * count);
		writeChunkHeader(buf, NbdProtocol.REPLY_FLAG_DONE, NbdProtocol.REPLY_TYPE_BLOCK_STATUS, cookie, 4 + 8 * count);
		buf.writeInt(contextId);
		for (int i = 0; i < count; i++) {
			buf.writeInt((int) lengths[i]);
			buf.writeInt(flags[i]);
		}
		return buf;
	}

}
