package dev.nbd.protocol;

import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

import io.netty.buffer.ByteBuf;

/** Parses the data of options that carry structure; every length is checked against what is there. */
public final class OptionData {

	private OptionData() {
	}

	/** Data of {@code NBD_OPT_INFO} and {@code NBD_OPT_GO}. */
	public record InfoRequest(String exportName, List<Integer> infoTypes) {
	}

	/** Data of {@code NBD_OPT_LIST_META_CONTEXT} and {@code NBD_OPT_SET_META_CONTEXT}. */
	public record MetaContextRequest(String exportName, List<String> queries) {
	}

	/** The option's data does not match its declared structure. */
	public static final class MalformedOptionException extends Exception {

		public MalformedOptionException(String message) {
			super(message, null, false, false);
		}

	}

	public static InfoRequest parseInfo(ByteBuf data) throws MalformedOptionException {
		String name = readString(data, "export name");
		need(data, 2, "number of information requests");
		int n = data.readUnsignedShort();
		if (data.readableBytes() != n * 2) {
			throw new MalformedOptionException("information request count " + n + " does not match the data");
		}
		List<Integer> types = new ArrayList<>(n);
		for (int i = 0; i < n; i++) {
			types.add(data.readUnsignedShort());
		}
		return new InfoRequest(name, types);
	}

	public static MetaContextRequest parseMetaContext(ByteBuf data) throws MalformedOptionException {
		String name = readString(data, "export name");
		need(data, 4, "number of queries");
		long n = data.readUnsignedInt();
		if (n > data.readableBytes() / 4) {
			throw new MalformedOptionException("query count " + n + " exceeds the data");
		}
		List<String> queries = new ArrayList<>((int) n);
		for (long i = 0; i < n; i++) {
			queries.add(readString(data, "query"));
		}
		if (data.isReadable()) {
			throw new MalformedOptionException("trailing bytes after the queries");
		}
		return new MetaContextRequest(name, queries);
	}

	/** The whole remaining data as a UTF-8 string (the data of {@code NBD_OPT_EXPORT_NAME}). */
	public static String remainingString(ByteBuf data) throws MalformedOptionException {
		return decode(data, data.readableBytes(), "export name");
	}

	private static String readString(ByteBuf data, String what) throws MalformedOptionException {
		need(data, 4, what + " length");
		long len = data.readUnsignedInt();
		if (len > NbdProtocol.MAX_STRING) {
			throw new MalformedOptionException(what + " longer than " + NbdProtocol.MAX_STRING + " bytes");
		}
		need(data, (int) len, what);
		return decode(data, (int) len, what);
	}

	private static String decode(ByteBuf data, int len, String what) throws MalformedOptionException {
		if (len > NbdProtocol.MAX_STRING) {
			throw new MalformedOptionException(what + " longer than " + NbdProtocol.MAX_STRING + " bytes");
		}
		try {
			String s = StandardCharsets.UTF_8.newDecoder()
				.onMalformedInput(CodingErrorAction.REPORT)
				.onUnmappableCharacter(CodingErrorAction.REPORT)
				.decode(data.nioBuffer(data.readerIndex(), len))
				.toString();
			data.skipBytes(len);
			return s;
		}
		catch (CharacterCodingException ex) {
			throw new MalformedOptionException(what + " is not valid UTF-8");
		}
	}

	private static void need(ByteBuf data, int n, String what) throws MalformedOptionException {
		if (data.readableBytes() < n) {
			throw new MalformedOptionException("truncated " + what);
		}
	}

}
