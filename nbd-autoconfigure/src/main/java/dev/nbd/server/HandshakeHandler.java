package dev.nbd.server;

import java.io.IOException;
import java.security.cert.Certificate;
import java.security.cert.X509Certificate;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;

import javax.net.ssl.SSLPeerUnverifiedException;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import dev.nbd.backend.ExportBackend;
import dev.nbd.protocol.HandshakeDecoder;
import dev.nbd.protocol.NbdEncoder;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.protocol.OptionData;
import dev.nbd.protocol.OptionData.MalformedOptionException;
import dev.nbd.protocol.ProtocolMessage;
import dev.nbd.protocol.RequestDecoder;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelFutureListener;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.channel.ChannelPipeline;
import io.netty.handler.ssl.SslHandler;
import io.netty.handler.timeout.IdleStateHandler;

/**
 * Option haggling of the fixed newstyle handshake. Ends by handing the connection to a
 * {@link TransmissionHandler} (GO, EXPORT_NAME) or by closing it.
 */
final class HandshakeHandler extends ChannelInboundHandlerAdapter {

	private static final Logger logger = LoggerFactory.getLogger(HandshakeHandler.class);

	private final NbdServer server;

	private final NbdConnection connection;

	private ScheduledFuture<?> timeout;

	private boolean flagsReceived;

	private boolean noZeroes;

	private boolean tlsActive;

	private boolean tlsRefusalCounted;

	private boolean structuredReplies;

	/** Export named in the last SET_META_CONTEXT that selected base:allocation, or null. */
	private String metaContextExport;

	private boolean done;

	HandshakeHandler(NbdServer server, NbdConnection connection) {
		this.server = server;
		this.connection = connection;
	}

	@Override
	public void channelActive(ChannelHandlerContext ctx) {
		long ms = this.server.config().handshakeTimeout().toMillis();
		if (ms > 0) {
			this.timeout = ctx.executor().schedule(() -> {
				if (!this.done && ctx.channel().isActive()) {
					this.done = true;
					this.server.refused("handshake_timeout", "Dropped " + this.connection
							+ ": negotiation not finished within nbd.server.handshake-timeout");
					ctx.close();
				}
			}, ms, TimeUnit.MILLISECONDS);
		}
		ctx.writeAndFlush(NbdEncoder.greeting(ctx.alloc()));
		ctx.fireChannelActive();
	}

	@Override
	public void channelInactive(ChannelHandlerContext ctx) {
		cancelTimeout();
		ctx.fireChannelInactive();
	}

	@Override
	public void channelRead(ChannelHandlerContext ctx, Object msg) {
		if (this.done) {
			if (msg instanceof ProtocolMessage.Option o) {
				o.release();
			}
			return;
		}
		if (msg instanceof ProtocolMessage.ClientFlags flags) {
			onClientFlags(ctx, flags.flags());
		}
		else if (msg instanceof ProtocolMessage.Option option) {
			try {
				onOption(ctx, option);
			}
			finally {
				option.release();
			}
		}
		else if (msg instanceof ProtocolMessage.Violation v) {
			protocolError(ctx, v.reason());
		}
	}

	@Override
	public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
		if (cause instanceof Error) {
			this.server.connectionFailed(this.connection, cause);
		}
		else {
			logger.debug("Closing {} during negotiation: {}", this.connection, cause.toString());
		}
		ctx.close();
	}

	private void onClientFlags(ChannelHandlerContext ctx, int flags) {
		int known = NbdProtocol.FLAG_C_FIXED_NEWSTYLE | NbdProtocol.FLAG_C_NO_ZEROES;
		if ((flags & NbdProtocol.FLAG_C_FIXED_NEWSTYLE) == 0 || (flags & ~known) != 0) {
			protocolError(ctx, "client flags 0x" + Integer.toHexString(flags)
					+ " (fixed newstyle is required and no other flags are known)");
			return;
		}
		this.flagsReceived = true;
		this.noZeroes = (flags & NbdProtocol.FLAG_C_NO_ZEROES) != 0;
	}

	private void onOption(ChannelHandlerContext ctx, ProtocolMessage.Option o) {
		if (!this.flagsReceived) {
			protocolError(ctx, "option before client flags");
			return;
		}
		int opt = o.option();
		ByteBufAllocator alloc = ctx.alloc();
		if (opt == NbdProtocol.OPT_SET_META_CONTEXT) {
			// A SET replaces earlier selections even when it fails (spec), whatever the failure.
			this.metaContextExport = null;
		}
		if (this.server.isDraining() && opt != NbdProtocol.OPT_ABORT) {
			shuttingDown(ctx, opt);
			return;
		}
		// FORCEDTLS comes first: before TLS, every option but STARTTLS and ABORT is refused,
		// whatever its size or content.
		TlsSettings tls = this.server.config().tls();
		if (tls != null && tls.required() && !this.tlsActive && opt != NbdProtocol.OPT_STARTTLS
				&& opt != NbdProtocol.OPT_ABORT) {
			if (opt == NbdProtocol.OPT_EXPORT_NAME) {
				this.done = true;
				this.server.refused("tls_required", "Dropped " + this.connection + ": EXPORT_NAME without TLS");
				ctx.close();
				return;
			}
			if (!this.tlsRefusalCounted) {
				// Counted once per connection: clients usually retry a few options before giving up.
				this.tlsRefusalCounted = true;
				this.server.refused("tls_required", "Refused " + NbdProtocol.optionName(opt) + " from "
						+ this.connection + ": TLS is required (nbd.server.ssl.mode=required)");
			}
			reply(ctx, NbdEncoder.optionError(alloc, opt, NbdProtocol.REP_ERR_TLS_REQD, "TLS is required"));
			return;
		}
		if (o.oversized()) {
			if (opt == NbdProtocol.OPT_EXPORT_NAME) {
				protocolError(ctx, "EXPORT_NAME of " + o.length() + " bytes");
				return;
			}
			reply(ctx, NbdEncoder.optionError(alloc, opt, NbdProtocol.REP_ERR_TOO_BIG,
					"option data of " + o.length() + " bytes exceeds the server's limit"));
			return;
		}
		ByteBuf data = o.data();
		switch (opt) {
			case NbdProtocol.OPT_EXPORT_NAME -> exportName(ctx, data);
			case NbdProtocol.OPT_ABORT -> {
				ctx.writeAndFlush(NbdEncoder.optionReply(alloc, opt, NbdProtocol.REP_ACK, null))
					.addListener(ChannelFutureListener.CLOSE);
				this.done = true;
			}
			case NbdProtocol.OPT_LIST -> list(ctx, data);
			case NbdProtocol.OPT_STARTTLS -> startTls(ctx, data, tls);
			case NbdProtocol.OPT_INFO, NbdProtocol.OPT_GO -> infoOrGo(ctx, opt, data);
			case NbdProtocol.OPT_STRUCTURED_REPLY -> {
				if (data.isReadable()) {
					invalid(ctx, opt, "STRUCTURED_REPLY takes no data");
				}
				else {
					this.structuredReplies = true;
					reply(ctx, NbdEncoder.optionReply(alloc, opt, NbdProtocol.REP_ACK, null));
				}
			}
			case NbdProtocol.OPT_LIST_META_CONTEXT, NbdProtocol.OPT_SET_META_CONTEXT -> metaContext(ctx, opt, data);
			default -> reply(ctx, NbdEncoder.optionError(alloc, opt, NbdProtocol.REP_ERR_UNSUP,
					"option " + NbdProtocol.optionName(opt) + " is not supported"));
		}
	}

	/**
	 * The server is draining: every option but ABORT gets NBD_REP_ERR_SHUTDOWN (EXPORT_NAME,
	 * which has no error reply, a close), then the connection closes. The client is told to
	 * leave, and no export is attached while the server waits for the requests in flight.
	 */
	private void shuttingDown(ChannelHandlerContext ctx, int opt) {
		this.done = true;
		this.server.refused("shutting_down",
				"Refused " + NbdProtocol.optionName(opt) + " from " + this.connection + ": server is shutting down");
		if (opt == NbdProtocol.OPT_EXPORT_NAME) {
			ctx.close();
			return;
		}
		ctx.writeAndFlush(NbdEncoder.optionError(ctx.alloc(), opt, NbdProtocol.REP_ERR_SHUTDOWN,
				"server is shutting down"))
			.addListener(ChannelFutureListener.CLOSE);
	}

	private void exportName(ChannelHandlerContext ctx, ByteBuf data) {
		String name;
		try {
			name = OptionData.remainingString(data);
		}
		catch (MalformedOptionException ex) {
			protocolError(ctx, "EXPORT_NAME: " + ex.getMessage());
			return;
		}
		Export export = this.server.resolve(name);
		String refusal = refusal(export, name, true);
		if (refusal != null) {
			// EXPORT_NAME has no error reply: the spec says to close.
			this.server.refused("export_refused", "Dropped " + this.connection + ": " + refusal);
			ctx.close();
			return;
		}
		long size;
		try {
			size = export.size();
		}
		catch (IOException ex) {
			logger.warn("Export '{}' could not report its size", export.name(), ex);
			ctx.close();
			return;
		}
		// The connection's view before the reply: a client is never told an export is ready
		// that then fails it. EXPORT_NAME has no error reply: a failure closes.
		ExportBackend view = connectView(export, NbdProtocol.OPT_EXPORT_NAME);
		if (view == null) {
			this.done = true;
			ctx.close();
			return;
		}
		ctx.writeAndFlush(NbdEncoder.exportNameReply(ctx.alloc(), size,
				export.transmissionFlags(this.structuredReplies), this.noZeroes));
		enterTransmission(ctx, export, view, size);
	}

	private void list(ChannelHandlerContext ctx, ByteBuf data) {
		if (data.isReadable()) {
			invalid(ctx, NbdProtocol.OPT_LIST, "LIST takes no data");
			return;
		}
		for (Export export : this.server.exports()) {
			if (allowed(export)) {
				ctx.write(NbdEncoder.serverEntry(ctx.alloc(), NbdProtocol.OPT_LIST, export.name(),
						export.description()));
			}
		}
		reply(ctx, NbdEncoder.optionReply(ctx.alloc(), NbdProtocol.OPT_LIST, NbdProtocol.REP_ACK, null));
	}

	private void startTls(ChannelHandlerContext ctx, ByteBuf data, TlsSettings tls) {
		int opt = NbdProtocol.OPT_STARTTLS;
		if (tls == null) {
			reply(ctx, NbdEncoder.optionError(ctx.alloc(), opt, NbdProtocol.REP_ERR_UNSUP, "TLS is not configured"));
			return;
		}
		if (this.tlsActive) {
			invalid(ctx, opt, "TLS is already active");
			return;
		}
		if (data.isReadable()) {
			invalid(ctx, opt, "STARTTLS takes no data");
			return;
		}
		if (decoder(ctx).bufferedBytes() > 0) {
			// The client must wait for the ACK. Bytes it sent before are plaintext that would
			// otherwise be read as if they had come through TLS (a man in the middle could inject
			// options that way).
			protocolError(ctx, "data sent after STARTTLS before its reply");
			return;
		}
		SslHandler ssl;
		try {
			ssl = tls.context().get().newHandler(ctx.alloc());
		}
		catch (RuntimeException ex) {
			logger.error("TLS context unavailable", ex);
			reply(ctx, NbdEncoder.optionError(ctx.alloc(), opt, NbdProtocol.REP_ERR_PLATFORM, "TLS unavailable"));
			return;
		}
		// The ACK goes out in clear; the handler is added after it was written, so it encrypts
		// only what follows.
		ctx.writeAndFlush(NbdEncoder.optionReply(ctx.alloc(), opt, NbdProtocol.REP_ACK, null));
		ctx.pipeline().addAfter(PipelineNames.FLUSH, PipelineNames.TLS, ssl);
		this.tlsActive = true;
		// Negotiation state from before TLS must not carry over (spec: STARTTLS).
		this.structuredReplies = false;
		this.metaContextExport = null;
		ssl.handshakeFuture().addListener(f -> {
			if (f.isSuccess()) {
				this.connection.tls(peerSubject(ssl));
			}
			else if (!this.done) {
				// (Not when the connection was already dropped for another reason, counted then.)
				this.done = true;
				this.server.refused("tls_handshake", "TLS handshake with " + this.connection + " failed: "
						+ f.cause().getMessage());
				ctx.close();
			}
		});
	}

	private static String peerSubject(SslHandler ssl) {
		try {
			Certificate[] certs = ssl.engine().getSession().getPeerCertificates();
			if (certs.length > 0 && certs[0] instanceof X509Certificate x509) {
				return x509.getSubjectX500Principal().getName();
			}
		}
		catch (SSLPeerUnverifiedException ex) {
			// No client certificate.
		}
		return null;
	}

	private void infoOrGo(ChannelHandlerContext ctx, int opt, ByteBuf data) {
		OptionData.InfoRequest request;
		try {
			request = OptionData.parseInfo(data);
		}
		catch (MalformedOptionException ex) {
			invalid(ctx, opt, ex.getMessage());
			return;
		}
		Export export = this.server.resolve(request.exportName());
		if (export == null) {
			reply(ctx, NbdEncoder.optionError(ctx.alloc(), opt, NbdProtocol.REP_ERR_UNKNOWN,
					"unknown export '" + request.exportName() + "'"));
			return;
		}
		String refusal = refusal(export, request.exportName(), opt == NbdProtocol.OPT_GO);
		if (refusal != null) {
			this.server.refused("export_refused", "Refused " + NbdProtocol.optionName(opt) + " from " + this.connection
					+ ": " + refusal);
			reply(ctx, NbdEncoder.optionError(ctx.alloc(), opt, NbdProtocol.REP_ERR_POLICY, refusal));
			return;
		}
		boolean go = opt == NbdProtocol.OPT_GO;
		long size;
		try {
			size = export.size();
		}
		catch (IOException ex) {
			if (go) {
				export.unclaim(this.connection);
			}
			reply(ctx, NbdEncoder.optionError(ctx.alloc(), opt, NbdProtocol.REP_ERR_PLATFORM, "size unavailable"));
			return;
		}
		// GO: the connection's view first, so a backend that cannot serve this client is an
		// error reply the client can act on (negotiation goes on), never an ACK and a dead connection.
		ExportBackend view = null;
		if (go) {
			view = connectView(export, opt);
			if (view == null) {
				export.unclaim(this.connection);
				reply(ctx, NbdEncoder.optionError(ctx.alloc(), opt, NbdProtocol.REP_ERR_UNKNOWN,
						"export '" + export.name() + "' is not available"));
				return;
			}
		}
		ByteBufAllocator alloc = ctx.alloc();
		for (int type : request.infoTypes()) {
			if (type == NbdProtocol.INFO_NAME) {
				ctx.write(NbdEncoder.infoString(alloc, opt, NbdProtocol.INFO_NAME, export.name()));
			}
			else if (type == NbdProtocol.INFO_DESCRIPTION && export.description() != null) {
				ctx.write(NbdEncoder.infoString(alloc, opt, NbdProtocol.INFO_DESCRIPTION, export.description()));
			}
		}
		// Block sizes are always sent: clients then know the payload limit.
		ctx.write(NbdEncoder.infoBlockSize(alloc, opt, export.minimumBlockSize(), export.preferredBlockSize(),
				this.server.config().maxPayload()));
		ctx.write(NbdEncoder.infoExport(alloc, opt, size, export.transmissionFlags(this.structuredReplies)));
		reply(ctx, NbdEncoder.optionReply(alloc, opt, NbdProtocol.REP_ACK, null));
		if (go) {
			enterTransmission(ctx, export, view, size);
		}
	}

	private void metaContext(ChannelHandlerContext ctx, int opt, ByteBuf data) {
		if (!this.structuredReplies) {
			invalid(ctx, opt, "structured replies must be negotiated first");
			return;
		}
		OptionData.MetaContextRequest request;
		try {
			request = OptionData.parseMetaContext(data);
		}
		catch (MalformedOptionException ex) {
			invalid(ctx, opt, ex.getMessage());
			return;
		}
		Export export = this.server.resolve(request.exportName());
		if (export == null || !allowed(export)) {
			reply(ctx, NbdEncoder.optionError(ctx.alloc(), opt, NbdProtocol.REP_ERR_UNKNOWN,
					"unknown export '" + request.exportName() + "'"));
			return;
		}
		boolean set = opt == NbdProtocol.OPT_SET_META_CONTEXT;
		boolean match;
		if (request.queries().isEmpty()) {
			match = !set;
		}
		else {
			match = request.queries()
				.stream()
				.anyMatch(q -> q.equals(NbdProtocol.CONTEXT_BASE_ALLOCATION) || (!set && q.equals("base:")));
		}
		if (match) {
			ctx.write(NbdEncoder.metaContext(ctx.alloc(), opt, NbdProtocol.CONTEXT_ID_BASE_ALLOCATION,
					NbdProtocol.CONTEXT_BASE_ALLOCATION));
		}
		if (set) {
			// A SET replaces earlier selections.
			this.metaContextExport = match ? export.name() : null;
		}
		reply(ctx, NbdEncoder.optionReply(ctx.alloc(), opt, NbdProtocol.REP_ACK, null));
	}

	/** Why this client may not use the export, or null. */
	private String refusal(Export export, String name, boolean attaching) {
		if (export == null) {
			return "unknown export '" + name + "'";
		}
		if (!allowed(export)) {
			return "client address not allowed for export '" + export.name() + "'";
		}
		if (attaching && !export.claim(this.connection)) {
			return "export '" + export.name() + "' accepts one connection at a time";
		}
		return null;
	}

	private boolean allowed(Export export) {
		if (export.allowedAddresses().isEmpty()) {
			return true;
		}
		if (!(this.connection.remoteAddress() instanceof java.net.InetSocketAddress inet)) {
			return false;
		}
		return export.allowedAddresses().stream().anyMatch(c -> c.contains(inet.getAddress()));
	}

	/** The backend's view for this connection, or null (logged and counted) when it cannot give one. */
	private ExportBackend connectView(Export export, int opt) {
		try {
			ExportBackend view = export.backend().connect();
			if (view == null) {
				throw new IllegalStateException("connect() returned null");
			}
			return view;
		}
		catch (IOException | RuntimeException ex) {
			this.server.refused("backend_connect", "Refused " + NbdProtocol.optionName(opt) + " from "
					+ this.connection + ": export '" + export.name() + "' could not open a connection: " + ex);
			logger.debug("Export '{}' refused a connection", export.name(), ex);
			return null;
		}
	}

	private void enterTransmission(ChannelHandlerContext ctx, Export export, ExportBackend view, long size) {
		this.done = true;
		cancelTimeout();
		FlushCoordinator own = (export.sharedFlush() == null) ? new FlushCoordinator(export.latched(view::flush),
				view.isBlocking() ? this.server.blockingExecutor() : Runnable::run) : null;
		this.connection.attach(export, view, own);
		boolean baseAllocation = this.structuredReplies && export.name().equals(this.metaContextExport);
		TransmissionHandler transmission = new TransmissionHandler(this.server, this.connection, export, view, size,
				this.structuredReplies, baseAllocation);
		ChannelPipeline p = ctx.pipeline();
		RequestDecoder decoder = new RequestDecoder(this.server.config().maxPayload(), view.canWritePieces());
		// The gate goes in front of the decoder: it must see (and may hold back) the decoder's reads.
		p.addAfter(PipelineNames.HANDSHAKE_DECODER, PipelineNames.MEMORY,
				new MemoryGate(this.server.memoryBudget().share(ctx.channel(), decoder)));
		p.replace(this, PipelineNames.TRANSMISSION, transmission);
		p.addAfter(PipelineNames.MEMORY, PipelineNames.REQUEST_DECODER, decoder);
		long idle = this.server.config().idleTimeout().toMillis();
		if (idle > 0) {
			p.addBefore(PipelineNames.REQUEST_DECODER, PipelineNames.IDLE,
					// Reader idleness only: watching writes too would cost a promise and a listener per reply.
					new IdleStateHandler(idle, 0, 0, TimeUnit.MILLISECONDS));
		}
		// Removing the handshake decoder hands any bytes it already holds to the request decoder.
		p.remove(PipelineNames.HANDSHAKE_DECODER);
	}

	private void reply(ChannelHandlerContext ctx, ByteBuf buf) {
		ctx.writeAndFlush(buf);
		if (!ctx.channel().isWritable() && !this.done) {
			// A client that sends options without reading the replies: stop reading and
			// decoding until they drain, rather than buffer replies without bound.
			ctx.channel().config().setAutoRead(false);
			decoder(ctx).pause(true);
		}
	}

	@Override
	public void channelWritabilityChanged(ChannelHandlerContext ctx) {
		if (!this.done && ctx.channel().isWritable() && decoder(ctx).isPaused()) {
			decoder(ctx).pause(false);
			ctx.channel().config().setAutoRead(true);
			// Decode what was left buffered: an empty read from the handler before the decoder.
			ChannelHandlerContext before = ctx.pipeline().context(PipelineNames.TLS);
			(before != null ? before : ctx.pipeline().context(PipelineNames.FLUSH)).fireChannelRead(Unpooled.EMPTY_BUFFER);
		}
		ctx.fireChannelWritabilityChanged();
	}

	private static HandshakeDecoder decoder(ChannelHandlerContext ctx) {
		return (HandshakeDecoder) ctx.pipeline().get(PipelineNames.HANDSHAKE_DECODER);
	}

	private void invalid(ChannelHandlerContext ctx, int opt, String message) {
		reply(ctx, NbdEncoder.optionError(ctx.alloc(), opt, NbdProtocol.REP_ERR_INVALID, message));
	}

	private void protocolError(ChannelHandlerContext ctx, String reason) {
		this.done = true;
		this.server.refused("protocol_error", "Dropped " + this.connection + " during negotiation: " + reason);
		ctx.close();
	}

	private void cancelTimeout() {
		if (this.timeout != null) {
			this.timeout.cancel(false);
			this.timeout = null;
		}
	}

}
