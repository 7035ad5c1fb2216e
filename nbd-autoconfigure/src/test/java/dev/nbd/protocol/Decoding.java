package dev.nbd.protocol;

import java.util.ArrayList;
import java.util.List;

import io.netty.buffer.ByteBuf;
import io.netty.channel.ChannelHandler;
import io.netty.channel.embedded.EmbeddedChannel;

/** Runs a decoder on an {@link EmbeddedChannel} and collects what it emits. */
final class Decoding {

	private Decoding() {
	}

	/** Everything {@code decoder} makes of {@code in} fed at once. */
	static List<Object> decodeAll(ChannelHandler decoder, ByteBuf in) {
		EmbeddedChannel ch = new EmbeddedChannel(decoder);
		ch.writeInbound(in);
		List<Object> out = new ArrayList<>();
		drain(ch, out);
		ch.finishAndReleaseAll();
		return out;
	}

	/** Moves the messages decoded so far into {@code out}. */
	static void drain(EmbeddedChannel ch, List<Object> out) {
		Object m;
		while ((m = ch.readInbound()) != null) {
			out.add(m);
		}
	}

}
