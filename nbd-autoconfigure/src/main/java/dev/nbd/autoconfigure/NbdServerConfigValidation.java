package dev.nbd.autoconfigure;

import java.net.InetAddress;
import java.net.UnknownHostException;
import java.nio.file.attribute.PosixFilePermission;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.List;
import java.util.Set;

import org.springframework.beans.factory.ObjectProvider;
import org.springframework.boot.ssl.NoSuchSslBundleException;
import org.springframework.boot.ssl.SslBundles;
import org.springframework.util.unit.DataSize;

import dev.nbd.backend.ExportBackend;
import dev.nbd.server.Cidr;
import dev.nbd.server.NbdServerConfig;
import dev.nbd.server.TlsSettings;

/**
 * Turns {@code nbd.server.*} into an {@link NbdServerConfig}, failing with a
 * {@link NbdConfigurationException} (property, value, what to do) on the first mistake.
 */
final class NbdServerConfigValidation {

	private NbdServerConfigValidation() {
	}

	static NbdServerConfig.Builder builder(NbdServerProperties properties, ObjectProvider<SslBundles> sslBundles) {
		if (properties.getPort() == -1 && properties.getUnixSocket() == null) {
			throw invalid("port", properties.getPort(), "turns TCP off, and nbd.server.unix-socket is not set",
					"Set nbd.server.unix-socket to listen on a Unix socket only, or nbd.server.port to a TCP port.");
		}
		if (properties.getPort() < -1 || properties.getPort() > 65535) {
			throw invalid("port", properties.getPort(), "is not a TCP port",
					"Set nbd.server.port from 1 to 65535, 0 to pick a free port, or -1 for none (with "
							+ "nbd.server.unix-socket).");
		}
		try {
			InetAddress.getByName(properties.getAddress());
		}
		catch (UnknownHostException ex) {
			throw invalid("address", properties.getAddress(), "cannot be resolved",
					"Set nbd.server.address to an address of this host, e.g. 127.0.0.1 or 0.0.0.0.");
		}
		if (properties.getWorkerThreads() < 1) {
			throw invalid("worker-threads", properties.getWorkerThreads(), "must be at least 1",
					"Set nbd.server.worker-threads to 1 or more, or remove it for the default.");
		}
		if (properties.getEventLoopThreads() < 0) {
			throw invalid("event-loop-threads", properties.getEventLoopThreads(), "must not be negative",
					"Set nbd.server.event-loop-threads to 0 (Netty's default) or more.");
		}
		checkPositive("handshake-timeout", properties.getHandshakeTimeout());
		NbdServerConfig.Builder builder = NbdServerConfig.builder()
			.address(properties.getAddress())
			.port(properties.getPort())
			.unixSocket(properties.getUnixSocket())
			.unixSocketPermissions(permissions(properties.getUnixSocketPermissions()))
			.maxConnections(properties.getMaxConnections())
			.maxInFlight(properties.getMaxInFlight())
			.maxPayload(intBytes("max-payload", properties.getMaxPayload(), 4096))
			.maxInFlightBytes(properties.getMaxInFlightBytes().toBytes())
			.memoryBudget(memoryBudget(properties.getMemoryBudget(), properties.getMaxPayload()))
			.handshakeTimeout(properties.getHandshakeTimeout())
			.idleTimeout(notNegative("idle-timeout", properties.getIdleTimeout()))
			.writeStallTimeout(notNegative("write-stall-timeout", properties.getWriteStallTimeout()))
			.drainTimeout(notNegative("drain-timeout", properties.getDrainTimeout()))
			.busyPoll(properties.getBusyPoll())
			.sendBufferSize((properties.getSendBufferSize() == null) ? NbdServerConfig.ADAPTIVE_SEND_BUFFER
					: intBytes("send-buffer-size", properties.getSendBufferSize(), 0))
			.allowedAddresses(cidrs("nbd.server.allowed-addresses", properties.getAllowedAddresses()))
			.transport(properties.getTransport())
			.eventLoopThreads(properties.getEventLoopThreads())
			.workerThreads(properties.getWorkerThreads())
			.defaultExport(properties.getDefaultExport());
		NbdServerProperties.Ssl ssl = properties.getSsl();
		String bundle = ssl.getBundle();
		if (bundle == null || bundle.isBlank()) {
			if (ssl.getClientAuth() != NbdServerProperties.ClientAuth.NONE) {
				throw new NbdConfigurationException(
						"nbd.server.ssl.client-auth is '" + ssl.getClientAuth().name().toLowerCase()
								+ "', but TLS is off: nbd.server.ssl.bundle is not set.",
						"Set nbd.server.ssl.bundle to an SSL bundle (spring.ssl.bundle.*) whose trust store checks"
								+ " client certificates, or remove nbd.server.ssl.client-auth.");
			}
			return builder;
		}
		SslBundles bundles = sslBundles.getIfAvailable();
		try {
			if (bundles == null) {
				throw new NoSuchSslBundleException(bundle, "no SSL bundles are configured");
			}
			bundles.getBundle(bundle);
		}
		catch (NoSuchSslBundleException ex) {
			List<String> names = (bundles != null) ? bundles.getBundleNames() : List.of();
			throw new NbdConfigurationException(
					"nbd.server.ssl.bundle is '" + bundle + "', but there is no SSL bundle of that name"
							+ (names.isEmpty() ? " (none is defined)." : " (defined: " + names + ")."),
					"Define the bundle with spring.ssl.bundle.pem." + bundle + ".* (or .jks." + bundle
							+ ".*), or set nbd.server.ssl.bundle to one of the defined bundles.",
					ex);
		}
		try {
			builder.tls(new TlsSettings(new SslBundleTlsContext(bundles, bundle, ssl.getClientAuth()),
					ssl.getMode() == NbdServerProperties.Mode.REQUIRED));
		}
		catch (RuntimeException ex) {
			throw new NbdConfigurationException("SSL bundle '" + bundle + "' (nbd.server.ssl.bundle) cannot make a TLS"
					+ " server context: " + ex.getMessage() + ".",
					"Give the bundle a private key and certificate (spring.ssl.bundle.*." + bundle + ".keystore.*)"
							+ ((ssl.getClientAuth() != NbdServerProperties.ClientAuth.NONE) ? " and a trust store" : "")
							+ ".",
					ex);
		}
		return builder;
	}

	/** Builds the config; what customizers set is checked here too. */
	static NbdServerConfig build(NbdServerConfig.Builder builder) {
		try {
			return builder.build();
		}
		catch (IllegalArgumentException ex) {
			throw new NbdConfigurationException("Invalid NBD server setting: nbd.server." + ex.getMessage() + ".",
					"Change nbd.server." + ex.getMessage().split(" ")[0] + " (or the NbdServerCustomizer that sets it).",
					ex);
		}
	}

	static void checkDefaultExport(NbdServerConfig config, List<ExportBackend> backends) {
		String name = config.defaultExport();
		if (name == null || backends.stream().anyMatch(b -> name.equals(b.name()))) {
			return;
		}
		throw new NbdConfigurationException(
				"nbd.server.default-export is '" + name + "', but there is no export of that name (exports: "
						+ backends.stream().map(ExportBackend::name).toList() + ").",
				"Set nbd.server.default-export to one of the exports, or remove it to serve the first export to"
						+ " clients that ask for the empty name.");
	}

	static List<Cidr> cidrs(String property, List<String> values) {
		return values.stream().map((value) -> {
			try {
				return Cidr.parse(value);
			}
			catch (IllegalArgumentException ex) {
				throw new NbdConfigurationException(property + " has an invalid entry: " + ex.getMessage() + ".",
						"Use IPv4 or IPv6 addresses or CIDR blocks, comma-separated (e.g. 10.0.0.0/8,::1); host names"
								+ " are not accepted.",
						ex);
			}
		}).toList();
	}

	/** The budget in bytes, 0 when unset (derived from the direct-memory limit). */
	private static long memoryBudget(DataSize budget, DataSize maxPayload) {
		if (budget == null) {
			return 0;
		}
		long min = 2 * maxPayload.toBytes();
		if (budget.toBytes() < min) {
			throw invalid("memory-budget", budget, "must be at least twice nbd.server.max-payload (" + DataSize.ofBytes(min)
					+ "): one payload is kept for completing a WRITE while the rest is spent",
					"Raise nbd.server.memory-budget, lower nbd.server.max-payload, or leave the budget unset"
							+ " (half the JVM's direct-memory limit).");
		}
		return budget.toBytes();
	}

	private static int intBytes(String key, DataSize size, int min) {
		long bytes = size.toBytes();
		if (bytes == 0 && min == 0) {
			return 0;
		}
		if (bytes < Math.max(min, 1) || bytes > Integer.MAX_VALUE) {
			throw invalid(key, size, "must be between " + ((min == 0) ? "1B" : DataSize.ofBytes(min)) + " and 2GB"
					+ ((min == 0) ? " (or 0)" : ""), "Change nbd.server." + key + ".");
		}
		return (int) bytes;
	}

	private static void checkPositive(String key, Duration duration) {
		if (duration == null || duration.isNegative() || duration.isZero()) {
			throw invalid(key, duration, "must be positive", "Set nbd.server." + key + " to a duration such as 10s.");
		}
	}

	private static Duration notNegative(String key, Duration duration) {
		if (duration == null) {
			return Duration.ZERO;
		}
		if (duration.isNegative()) {
			throw invalid(key, duration, "must not be negative", "Set nbd.server." + key + " to 0 (off) or more.");
		}
		return duration;
	}

	/** {@code 660}, {@code 0660} or {@code rw-rw----}. */
	static Set<PosixFilePermission> permissions(String value) {
		String v = value.trim();
		try {
			if (v.matches("0?[0-7]{3}")) {
				int mode = Integer.parseInt(v, 8);
				StringBuilder symbolic = new StringBuilder();
				for (int bit = 8; bit >= 0; bit--) {
					symbolic.append(((mode >> bit) & 1) == 0 ? '-' : "rwx".charAt((8 - bit) % 3));
				}
				v = symbolic.toString();
			}
			return PosixFilePermissions.fromString(v);
		}
		catch (IllegalArgumentException ex) {
			throw invalid("unix-socket-permissions", value, "is neither octal nor symbolic permissions",
					"Set nbd.server.unix-socket-permissions like 660 or rw-rw----.");
		}
	}

	private static NbdConfigurationException invalid(String key, Object value, String reason, String action) {
		return new NbdConfigurationException("nbd.server." + key + " is '" + value + "', which " + reason + ".",
				action);
	}

}
