package dev.nbd.server;

import io.netty.channel.ChannelDuplexHandler;
import io.netty.channel.ChannelHandlerContext;

/**
 * Sits in front of the request decoder and applies the {@link MemoryBudget}: after each socket
 * read it reports what the connection holds, and when the budget says stop it turns reading off
 * and holds back the reads the decoder asks for while it waits for the rest of a WRITE payload
 * (a decoder asks for more input even when auto-read is off). The transmission handler turns
 * reading on again once the budget allows it.
 */
final class MemoryGate extends ChannelDuplexHandler {

	private final MemoryBudget.Share share;

	MemoryGate(MemoryBudget.Share share) {
		this.share = share;
	}

	MemoryBudget.Share share() {
		return this.share;
	}

	@Override
	public void channelRead(ChannelHandlerContext ctx, Object msg) {
		ctx.fireChannelRead(msg);
		if (!this.share.mayRead() && ctx.channel().config().isAutoRead()) {
			ctx.channel().config().setAutoRead(false);
		}
	}

	/**
	 * Holds back reads asked for while the budget has stopped this connection and auto-read is
	 * off (the decoder's). Reads asked with auto-read on come from the transmission handler
	 * turning reading back on, which it does only when the budget allows or while it closes.
	 */
	@Override
	public void read(ChannelHandlerContext ctx) {
		if (!this.share.paused() || ctx.channel().config().isAutoRead()) {
			ctx.read();
		}
	}

	@Override
	public void channelInactive(ChannelHandlerContext ctx) {
		this.share.close();
		ctx.fireChannelInactive();
	}

	@Override
	public void handlerRemoved(ChannelHandlerContext ctx) {
		this.share.close();
	}

}
