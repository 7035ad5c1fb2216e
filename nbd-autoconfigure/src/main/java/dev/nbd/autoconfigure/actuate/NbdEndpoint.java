package dev.nbd.autoconfigure.actuate;

import java.io.IOException;
import java.util.Comparator;
import java.util.List;
import java.util.Locale;
import java.util.Map;

import org.springframework.boot.actuate.endpoint.annotation.DeleteOperation;
import org.springframework.boot.actuate.endpoint.annotation.Endpoint;
import org.springframework.boot.actuate.endpoint.annotation.ReadOperation;
import org.springframework.boot.actuate.endpoint.annotation.Selector;
import org.springframework.boot.actuate.endpoint.web.WebEndpointResponse;

import dev.nbd.server.EventLoopFileIo;
import dev.nbd.server.Export;
import dev.nbd.server.LatencyStats;
import dev.nbd.server.NbdConnection;
import dev.nbd.server.NbdServer;

/**
 * The {@code nbd} actuator endpoint: exports and live connections.
 * <ul>
 * <li>{@code GET /actuator/nbd}: every export and every connection;</li>
 * <li>{@code GET /actuator/nbd/{export}}: one export with its connections (404 if unknown);</li>
 * <li>{@code DELETE /actuator/nbd/{export}/{connection}}: closes one connection cleanly (requests
 * in flight are answered first, later ones get {@code NBD_ESHUTDOWN}); answers the connection as
 * it was, or 404.</li>
 * </ul>
 */
@Endpoint(id = "nbd")
public class NbdEndpoint {

	private final NbdServer server;

	public NbdEndpoint(NbdServer server) {
		this.server = server;
	}

	@ReadOperation
	public NbdDescriptor nbd() {
		List<ExportDescriptor> exports = this.server.exports().stream().map(NbdEndpoint::describe).toList();
		return new NbdDescriptor(exports, connections(null));
	}

	@ReadOperation
	public ExportDetails export(@Selector String export) {
		Export e = this.server.export(export);
		if (e == null) {
			return null;
		}
		ExportDescriptor d = describe(e);
		List<ConnectionDescriptor> connections = connections(export);
		return new ExportDetails(d.name(), d.size(), d.readOnly(), d.multiConn(), connections.size(), connections,
				d.flush(), d.flushRequests(), d.backendSyncs(), d.bytesRead(), d.bytesWritten(), fileIo(e),
				e.backend().details());
	}

	@DeleteOperation
	public WebEndpointResponse<ConnectionDescriptor> disconnect(@Selector String export,
			@Selector String connection) {
		for (NbdConnection c : this.server.connections()) {
			if (c.id().equals(connection) && c.export() != null && c.export().name().equals(export)) {
				ConnectionDescriptor before = describe(c);
				c.closeGracefully();
				return new WebEndpointResponse<>(before, WebEndpointResponse.STATUS_OK);
			}
		}
		return new WebEndpointResponse<>(WebEndpointResponse.STATUS_NOT_FOUND);
	}

	private List<ConnectionDescriptor> connections(String export) {
		return this.server.connections()
			.stream()
			.filter((c) -> c.export() != null && (export == null || c.export().name().equals(export)))
			.sorted(Comparator.comparing(NbdConnection::connectedAt).thenComparing(NbdConnection::id))
			.map(NbdEndpoint::describe)
			.toList();
	}

	private static ExportDescriptor describe(Export export) {
		long size;
		try {
			size = export.size();
		}
		catch (IOException | RuntimeException ex) {
			size = -1;
		}
		LatencyStats flush = export.flushLatency();
		return new ExportDescriptor(export.name(), size, export.readOnly(), export.multiConn(),
				export.connections().size(),
				new FlushDescriptor(flush.count(), round(flush.meanMillis()), round(flush.quantileMillis(0.99)),
						round(flush.maxMillis())),
				export.flushRequests(), export.backendSyncs(), export.bytesRead(), export.bytesWritten());
	}

	private static ConnectionDescriptor describe(NbdConnection c) {
		return new ConnectionDescriptor(c.id(), c.export().name(), c.remote(), c.tls(), c.tlsSubject(), c.inFlight(),
				c.peakInFlight(), c.maxInFlight(), c.requests(), c.bytesRead(), c.bytesWritten(),
				c.connectedAt().toString());
	}

	private static double round(double ms) {
		return Math.round(ms * 1000) / 1000.0;
	}

	/** {@code GET /actuator/nbd}. */
	public record NbdDescriptor(List<ExportDescriptor> exports, List<ConnectionDescriptor> connections) {
	}

	/**
	 * One export. {@code flushRequests} counts client flushes, {@code backendSyncs} the backend
	 * syncs that served them (group commit makes it smaller).
	 */
	public record ExportDescriptor(String name, long size, boolean readOnly, boolean multiConn, int connections,
			FlushDescriptor flush, long flushRequests, long backendSyncs, long bytesRead, long bytesWritten) {
	}

	/**
	 * {@code GET /actuator/nbd/{export}}: the export with its connections listed, and what its
	 * backend reports about itself ({@code ExportBackend.details()}, e.g. a file backend's
	 * sparse-file calls and fallbacks).
	 */
	public record ExportDetails(String name, long size, boolean readOnly, boolean multiConn, int connectionCount,
			List<ConnectionDescriptor> connections, FlushDescriptor flush, long flushRequests, long backendSyncs,
			long bytesRead, long bytesWritten, FileIoDescriptor fileIo, Map<String, Object> backend) {
	}

	/**
	 * Where the reads and plain writes of the backend's served file run ({@code event-loop-io}):
	 * {@code mode} adaptive or always, {@code onNetworkThreads} now, and {@code fallbacks}, the
	 * times slow calls sent them to workers. Null for exports without a served file or with
	 * {@code event-loop-io=false}.
	 */
	public record FileIoDescriptor(String mode, boolean onNetworkThreads, long fallbacks) {
	}

	private static FileIoDescriptor fileIo(Export export) {
		EventLoopFileIo io = export.fileIo();
		return (io != null) ? new FileIoDescriptor(io.mode().name().toLowerCase(Locale.ROOT), io.onEventLoop(),
				io.fallbacks()) : null;
	}

	/** Client FLUSH latency, in milliseconds. */
	public record FlushDescriptor(long count, double meanMs, double p99Ms, double maxMs) {
	}

	/**
	 * One connection. {@code inFlight} is its queue (received, not yet answered),
	 * {@code peakInFlight} the deepest it has been, {@code maxInFlight} the limit before the
	 * server stops reading the socket.
	 */
	public record ConnectionDescriptor(String id, String export, String remote, boolean tls, String tlsSubject,
			int inFlight, int peakInFlight, int maxInFlight, long requests, long bytesRead, long bytesWritten,
			String connectedAt) {
	}

}
