package dev.nbd.server;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Random;

import io.netty.handler.ssl.SslContext;
import io.netty.handler.ssl.SslContextBuilder;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;
import org.springframework.boot.test.system.CapturedOutput;
import org.springframework.boot.test.system.OutputCaptureExtension;

import dev.nbd.backend.ExportBackend;
import dev.nbd.backend.MemoryBackend;
import dev.nbd.protocol.NbdError;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.testsupport.NbdServerExtension;
import dev.nbd.testsupport.RawNbdClient;
import dev.nbd.testsupport.RawNbdClient.OptionReply;
import dev.nbd.testsupport.RecordingListener;
import dev.nbd.testsupport.TestPki;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatExceptionOfType;

/**
 * The spec's FORCEDTLS rules, STARTTLS edge cases, allow-lists, read-only exports and the
 * exposure warning, checked byte by byte with {@link RawNbdClient}.
 */
@ExtendWith(OutputCaptureExtension.class)
class SecurityProtocolTests {

	@TempDir
	static Path dir;

	static SslContext sslContext;

	@RegisterExtension
	final NbdServerExtension servers = new NbdServerExtension();

	private final RecordingListener listener = this.servers.listener();

	@BeforeAll
	static void pki() throws Exception {
		TestPki pki = TestPki.create(dir);
		sslContext = SslContextBuilder.forServer(pki.serverCert().toFile(), pki.serverKey().toFile()).build();
	}

	private int start(NbdServerConfig.Builder config, Map<String, List<Cidr>> exportAllowLists,
			ExportBackend... backends) {
		return this.servers.start(config, List.of(backends), Map.of(), exportAllowLists).port();
	}

	private int start(boolean tlsRequired) {
		return start(NbdServerConfig.builder().tls(new TlsSettings(() -> sslContext, tlsRequired)), Map.of(),
				new MemoryBackend("mem", 1 << 20));
	}

	@Test
	void forcedTlsRefusesEveryOptionButStartTlsAndAbort() throws Exception {
		int port = start(true);
		try (RawNbdClient c = RawNbdClient.connect(port)) {
			c.handshake();
			List<byte[]> data = List.of(new byte[0], RawNbdClient.goData("mem"), RawNbdClient.goData("mem"),
					new byte[0], new byte[8], new byte[0], new byte[3]);
			int[] options = { NbdProtocol.OPT_LIST, NbdProtocol.OPT_INFO, NbdProtocol.OPT_GO,
					NbdProtocol.OPT_STRUCTURED_REPLY, NbdProtocol.OPT_SET_META_CONTEXT, 4242,
					NbdProtocol.OPT_EXTENDED_HEADERS };
			for (int i = 0; i < options.length; i++) {
				OptionReply r = c.request(options[i], data.get(i));
				assertThat(r.option()).isEqualTo(options[i]);
				assertThat(r.type()).as("reply to option %d", options[i]).isEqualTo(NbdProtocol.REP_ERR_TLS_REQD);
			}
			// Even an option too big to be read gets TLS_REQD, not TOO_BIG.
			c.output().write(RawNbdClient.optionHeader(NbdProtocol.OPT_INFO, 1 << 20));
			c.output().write(new byte[1 << 20]);
			assertThat(c.readOptionReply().type()).isEqualTo(NbdProtocol.REP_ERR_TLS_REQD);
			assertThat(c.request(NbdProtocol.OPT_ABORT, new byte[0]).type()).isEqualTo(NbdProtocol.REP_ACK);
			assertThat(c.closedByServer(5000)).isTrue();
		}
		// Counted once for the connection, however many options it tried.
		assertThat(this.listener.refusals("tls_required")).isEqualTo(1);
	}

	@Test
	void forcedTlsEndsTheSessionOnExportNameBeforeTls() throws Exception {
		int port = start(true);
		try (RawNbdClient c = RawNbdClient.connect(port)) {
			c.handshake();
			c.sendOption(NbdProtocol.OPT_EXPORT_NAME, "mem".getBytes(StandardCharsets.UTF_8));
			assertThat(c.input().read()).as("no export data, just the end of the stream").isEqualTo(-1);
		}
		assertThat(this.listener.awaitRefusals("tls_required", 1, Duration.ofSeconds(5))).isTrue();
	}

	@Test
	void afterTlsOptionsWorkAndASecondStartTlsIsInvalid() throws Exception {
		int port = start(true);
		try (RawNbdClient c = RawNbdClient.connect(port)) {
			c.handshake();
			c.startTls();
			assertThat(c.request(NbdProtocol.OPT_STARTTLS, new byte[0]).type()).isEqualTo(NbdProtocol.REP_ERR_INVALID);
			assertThat(c.request(NbdProtocol.OPT_LIST, new byte[0]).type()).isEqualTo(NbdProtocol.REP_ACK);
			RawNbdClient.Export export = c.go("mem");
			assertThat(export.size()).isEqualTo(1 << 20);
			byte[] block = new byte[512];
			new Random(1).nextBytes(block);
			c.sendRequest(0, NbdProtocol.CMD_WRITE, 1, 512, 512, block);
			assertThat(c.readSimpleReply()).isEqualTo(new RawNbdClient.SimpleReply(0, 1));
			c.sendRequest(0, NbdProtocol.CMD_READ, 2, 512, 512, null);
			assertThat(c.readSimpleReply()).isEqualTo(new RawNbdClient.SimpleReply(0, 2));
			byte[] back = new byte[512];
			c.readFully(back);
			assertThat(back).isEqualTo(block);
		}
		assertThat(this.listener.opened()).singleElement().satisfies((conn) -> assertThat(conn.tls()).isTrue());
	}

	@Test
	void negotiationStateFromBeforeStartTlsIsDiscarded() throws Exception {
		int port = start(false);
		try (RawNbdClient c = RawNbdClient.connect(port)) {
			c.handshake();
			assertThat(c.request(NbdProtocol.OPT_STRUCTURED_REPLY, new byte[0]).type()).isEqualTo(NbdProtocol.REP_ACK);
			c.startTls();
			// Structured replies are gone: meta contexts need them again, and GO offers no DF.
			byte[] meta = ByteBuffer.allocate(4 + 3 + 4)
				.putInt(3)
				.put("mem".getBytes(StandardCharsets.UTF_8))
				.putInt(0)
				.array();
			assertThat(c.request(NbdProtocol.OPT_LIST_META_CONTEXT, meta).type())
				.isEqualTo(NbdProtocol.REP_ERR_INVALID);
			assertThat(c.go("mem").flags() & NbdProtocol.TFLAG_SEND_DF).isZero();
		}
	}

	@Test
	void plaintextSentWithStartTlsIsNotTakenAsEncrypted() throws Exception {
		int port = start(true);
		try (RawNbdClient c = RawNbdClient.connect(port)) {
			c.handshake();
			// A man in the middle appends a plaintext option to the client's STARTTLS.
			byte[] starttls = RawNbdClient.option(NbdProtocol.OPT_STARTTLS, new byte[0]);
			byte[] injected = RawNbdClient.option(NbdProtocol.OPT_EXPORT_NAME, "mem".getBytes(StandardCharsets.UTF_8));
			c.output().write(ByteBuffer.allocate(starttls.length + injected.length).put(starttls).put(injected).array());
			c.output().flush();
			assertThat(c.closedByServer(5000)).isTrue();
		}
		assertThat(this.listener.awaitRefusals("protocol_error", 1, Duration.ofSeconds(5))).isTrue();
		assertThat(this.listener.opened()).isEmpty();
	}

	@Test
	void garbageInsideTheTlsUpgradeClosesCleanly() throws Exception {
		int port = start(NbdServerConfig.builder().tls(new TlsSettings(() -> sslContext, true)), Map.of(),
				new MemoryBackend("mem", 1 << 20));
		Random random = new Random(42);
		for (int size : new int[] { 5, 300, 20_000 }) {
			try (RawNbdClient c = garbageAfterStartTls(port, size, random)) {
				assertThat(c.closedByServer(30_000)).as("closed after %d garbage bytes", size).isTrue();
			}
		}
		assertThat(this.listener.awaitRefusals("tls_handshake", 3, Duration.ofSeconds(30))).isTrue();
		assertThat(this.listener.refusals()).hasSize(3);
		// And the server still serves.
		try (RawNbdClient c = RawNbdClient.connect(port)) {
			c.handshake();
			c.startTls();
			assertThat(c.go("mem").size()).isEqualTo(1 << 20);
		}
	}

	@Test
	void oneGarbageByteInsideTheTlsUpgradeIsDroppedAtTheHandshakeTimeout() throws Exception {
		// One byte could still be the start of a TLS record: the handshake timeout drops that
		// client. Short, as the test waits for it; the STARTTLS before it has the same time.
		int port = start(NbdServerConfig.builder()
			.handshakeTimeout(Duration.ofSeconds(3))
			.tls(new TlsSettings(() -> sslContext, true)), Map.of(), new MemoryBackend("mem", 1 << 20));
		try (RawNbdClient c = garbageAfterStartTls(port, 1, new Random(42))) {
			assertThat(c.closedByServer(60_000)).isTrue();
		}
		assertThat(this.listener.awaitRefusals("handshake_timeout", 1, Duration.ofSeconds(30))).isTrue();
		assertThat(this.listener.refusals()).hasSize(1);
	}

	private static RawNbdClient garbageAfterStartTls(int port, int size, Random random) throws IOException {
		RawNbdClient c = RawNbdClient.connect(port);
		c.handshake();
		assertThat(c.request(NbdProtocol.OPT_STARTTLS, new byte[0]).type()).isEqualTo(NbdProtocol.REP_ACK);
		byte[] garbage = new byte[size];
		random.nextBytes(garbage);
		garbage[0] = 0x47; // not a TLS record type
		c.output().write(garbage);
		c.output().flush();
		return c;
	}

	@Test
	void startTlsWithoutTlsConfiguredIsUnsupported() throws Exception {
		int port = start(NbdServerConfig.builder(), Map.of(), new MemoryBackend("mem", 1 << 20));
		try (RawNbdClient c = RawNbdClient.connect(port)) {
			c.handshake();
			assertThat(c.request(NbdProtocol.OPT_STARTTLS, new byte[0]).type()).isEqualTo(NbdProtocol.REP_ERR_UNSUP);
			assertThat(c.go("mem").size()).isEqualTo(1 << 20);
		}
	}

	@Test
	void addressesOutsideTheAllowListGetNoByte() throws Exception {
		for (String blocked : List.of("10.0.0.0/8", "::1/128", "192.168.1.7")) {
			int port = start(NbdServerConfig.builder().allowedAddresses(List.of(Cidr.parse(blocked))), Map.of(),
					new MemoryBackend("mem", 1 << 20));
			try (RawNbdClient c = RawNbdClient.connect(port)) {
				assertThat(c.input().read()).as("first byte with allow-list %s", blocked).isEqualTo(-1);
			}
			this.servers.stopAll();
		}
		assertThat(this.listener.awaitRefusals("address_not_allowed", 3, Duration.ofSeconds(5))).isTrue();
		int port = start(NbdServerConfig.builder().allowedAddresses(List.of(Cidr.parse("127.0.0.0/8"), Cidr.parse("::1"))),
				Map.of(), new MemoryBackend("mem", 1 << 20));
		try (RawNbdClient c = RawNbdClient.connect(port)) {
			c.handshake();
			assertThat(c.go("mem").size()).isEqualTo(1 << 20);
		}
	}

	@Test
	void perExportAllowListHidesAndRefusesTheExport() throws Exception {
		int port = start(NbdServerConfig.builder(), Map.of("secret", List.of(Cidr.parse("10.0.0.0/8"))),
				new MemoryBackend("mem", 1 << 20), new MemoryBackend("secret", 1 << 20));
		try (RawNbdClient c = RawNbdClient.connect(port)) {
			c.handshake();
			c.sendOption(NbdProtocol.OPT_LIST, new byte[0]);
			StringBuilder names = new StringBuilder();
			for (OptionReply r = c.readOptionReply(); r.type() == NbdProtocol.REP_SERVER; r = c.readOptionReply()) {
				names.append(new String(r.data(), 4, ByteBuffer.wrap(r.data()).getInt(), StandardCharsets.UTF_8))
					.append(' ');
			}
			assertThat(names.toString().trim()).isEqualTo("mem");
			assertThat(c.request(NbdProtocol.OPT_GO, RawNbdClient.goData("secret")).type())
				.isEqualTo(NbdProtocol.REP_ERR_POLICY);
			assertThat(c.go("mem").size()).isEqualTo(1 << 20);
		}
		assertThat(this.listener.refusals()).containsExactly("export_refused");
	}

	@Test
	void readOnlyExportsRefuseEveryWriteWithEpermAndDoNotAdvertiseThem() throws Exception {
		int port = start(NbdServerConfig.builder(), Map.of(), new MemoryBackend("ro", 1 << 20, null, true));
		try (RawNbdClient c = RawNbdClient.connect(port)) {
			c.handshake();
			int flags = c.go("ro").flags();
			assertThat(flags & NbdProtocol.TFLAG_READ_ONLY).isNotZero();
			assertThat(flags & (NbdProtocol.TFLAG_SEND_FLUSH | NbdProtocol.TFLAG_SEND_FUA | NbdProtocol.TFLAG_SEND_TRIM
					| NbdProtocol.TFLAG_SEND_WRITE_ZEROES | NbdProtocol.TFLAG_SEND_FAST_ZERO))
				.isZero();
			long cookie = 0;
			// Plain, with flags the export does not offer, beyond the end: always EPERM.
			int[][] writes = { { NbdProtocol.CMD_WRITE, 0 }, { NbdProtocol.CMD_WRITE, NbdProtocol.CMD_FLAG_FUA },
					{ NbdProtocol.CMD_TRIM, 0 }, { NbdProtocol.CMD_TRIM, NbdProtocol.CMD_FLAG_FUA },
					{ NbdProtocol.CMD_WRITE_ZEROES, 0 }, { NbdProtocol.CMD_WRITE_ZEROES, NbdProtocol.CMD_FLAG_NO_HOLE },
					{ NbdProtocol.CMD_WRITE_ZEROES, NbdProtocol.CMD_FLAG_FAST_ZERO } };
			for (int[] w : writes) {
				for (long offset : new long[] { 0, 1 << 20 }) {
					cookie++;
					c.sendRequest(w[1], w[0], cookie, offset, 4096, (w[0] == NbdProtocol.CMD_WRITE) ? new byte[4096] : null);
					assertThat(c.readSimpleReply()).as("command %d flags %d offset %d", w[0], w[1], offset)
						.isEqualTo(new RawNbdClient.SimpleReply(NbdError.EPERM.code(), cookie));
				}
			}
			c.sendRequest(0, NbdProtocol.CMD_READ, 99, 0, 512, null);
			assertThat(c.readSimpleReply().error()).isZero();
		}
	}

	@Test
	void warnsAtStartWhenBindingBeyondLoopbackWithoutTls(CapturedOutput output) {
		// 192.0.2.1 (TEST-NET-1) is on no interface here: the bind fails, after the warning, and
		// nothing is exposed while testing.
		assertThatExceptionOfType(NbdServerException.class)
			.isThrownBy(() -> start(NbdServerConfig.builder().address("192.0.2.1"), Map.of(), new MemoryBackend("mem", 4096)));
		assertThat(output).contains("NBD server binds 192.0.2.1 without TLS");

		assertThatExceptionOfType(NbdServerException.class).isThrownBy(() -> start(
				NbdServerConfig.builder().address("192.0.2.1").tls(new TlsSettings(() -> sslContext, false)), Map.of(),
				new MemoryBackend("mem", 4096)));
		assertThat(output).contains("NBD server binds 192.0.2.1 with TLS optional");

		start(NbdServerConfig.builder(), Map.of(), new MemoryBackend("mem", 4096));
		assertThatExceptionOfType(NbdServerException.class).isThrownBy(() -> start(
				NbdServerConfig.builder().address("192.0.2.1").tls(new TlsSettings(() -> sslContext, true)), Map.of(),
				new MemoryBackend("mem", 4096)));
		assertThat(output.toString().lines().filter((l) -> l.contains("NBD server binds"))).hasSize(2);
	}

}
