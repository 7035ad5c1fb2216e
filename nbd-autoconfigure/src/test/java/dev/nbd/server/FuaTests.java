package dev.nbd.server;

import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import dev.nbd.backend.MemoryBackend;
import dev.nbd.backend.NbdBackendException;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.testsupport.NbdServerExtension;
import dev.nbd.testsupport.RawNbdClient;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * FUA on WRITE, TRIM and WRITE_ZEROES: done by the backend where it can (the flag passed on, no flush),
 * otherwise the operation without it and then one flush, before the reply. Seen in the order of
 * the backend calls.
 */
class FuaTests {

	private static final int SIZE = 16 << 20;

	@RegisterExtension
	final NbdServerExtension servers = new NbdServerExtension();

	@Test
	void aBackendThatCanFuaGetsTheFlagAndNoFlush() throws Exception {
		Recording backend = new Recording(true, true);
		this.servers.start(backend);
		assertThat(fua(backend, NbdProtocol.CMD_TRIM)).containsExactly("trim fua=true");
		assertThat(fua(backend, NbdProtocol.CMD_WRITE_ZEROES)).containsExactly("zero fua=true");
	}

	@Test
	void aBackendThatCannotFuaIsFlushedAfterTheOperation() throws Exception {
		Recording backend = new Recording(false, true);
		this.servers.start(backend);
		assertThat(fua(backend, NbdProtocol.CMD_TRIM)).containsExactly("trim fua=false", "flush");
		assertThat(fua(backend, NbdProtocol.CMD_WRITE_ZEROES)).containsExactly("zero fua=false", "flush");
	}

	@Test
	void aFuaWriteIsPassedOnOrFollowedByOneFlush() throws Exception {
		Recording canFua = new Recording(true, true);
		this.servers.start(canFua);
		assertThat(fuaWrite(canFua)).containsExactly("write fua=true");
		Recording cannotFua = new Recording(false, true);
		this.servers.start(cannotFua);
		assertThat(fuaWrite(cannotFua)).containsExactly("write fua=false", "flush");
	}

	@Test
	void zeroesWrittenByTheServerAreFlushedOnceAfterAll() throws Exception {
		// Can FUA but not zero: the server writes the zeroes, none with FUA, then flushes once.
		Recording backend = new Recording(true, false);
		this.servers.start(backend);
		assertThat(fua(backend, NbdProtocol.CMD_WRITE_ZEROES)).containsExactly("write fua=false", "flush");
	}

	@Test
	void aLongRequestIsFlushedOnceAfterItsLastChunk() throws Exception {
		// 8 MiB run as two 4 MiB chunks, neither with FUA: one flush covers both.
		Recording backend = new Recording(true, true);
		this.servers.start(backend);
		try (RawNbdClient client = RawNbdClient.connect(this.servers.port(), "rec")) {
			client.sendRequest(NbdProtocol.CMD_FLAG_FUA, NbdProtocol.CMD_WRITE_ZEROES, 1, 0, 8 << 20, null);
			assertThat(client.readSimpleReply().error()).isZero();
		}
		assertThat(backend.calls).containsExactly("zero fua=false", "zero fua=false", "flush");
	}

	/** The backend calls one FUA request of {@code type} over the first 4 KiB made, answered first. */
	private List<String> fua(Recording backend, int type) throws Exception {
		backend.calls.clear();
		try (RawNbdClient client = RawNbdClient.connect(this.servers.port(), "rec")) {
			client.sendRequest(NbdProtocol.CMD_FLAG_FUA, type, 1, 0, 4096, null);
			assertThat(client.readSimpleReply().error()).isZero();
		}
		return List.copyOf(backend.calls);
	}

	/** The backend calls one FUA WRITE of 4 KiB made, answered first, to the server started last. */
	private List<String> fuaWrite(Recording backend) throws Exception {
		backend.calls.clear();
		try (RawNbdClient client = RawNbdClient.connect(this.servers.port(), "rec")) {
			client.sendRequest(NbdProtocol.CMD_FLAG_FUA, NbdProtocol.CMD_WRITE, 1, 0, 4096, new byte[4096]);
			assertThat(client.readSimpleReply().error()).isZero();
		}
		return List.copyOf(backend.calls);
	}

	/** Memory that records trims, zeroes, writes (with their FUA flag) and flushes, in order. */
	private static final class Recording extends MemoryBackend {

		final List<String> calls = new CopyOnWriteArrayList<>();

		private final boolean canFua;

		private final boolean canZero;

		Recording(boolean canFua, boolean canZero) {
			super("rec", SIZE);
			this.canFua = canFua;
			this.canZero = canZero;
		}

		@Override
		public boolean canFua() {
			return this.canFua;
		}

		@Override
		public boolean canZero() {
			return this.canZero;
		}

		@Override
		public boolean canFastZero() {
			return this.canZero;
		}

		@Override
		public void trim(long offset, long length, boolean fua) throws NbdBackendException {
			// Not passed on: the memory backend trims by zeroing, which would show as a zero call.
			this.calls.add("trim fua=" + fua);
		}

		@Override
		public void zero(long offset, long length, boolean mayTrim, boolean fast, boolean fua)
				throws NbdBackendException {
			this.calls.add("zero fua=" + fua);
			super.zero(offset, length, mayTrim, fast, fua);
		}

		@Override
		public void write(long offset, java.nio.ByteBuffer src, boolean fua) throws NbdBackendException {
			this.calls.add("write fua=" + fua);
			super.write(offset, src, fua);
		}

		@Override
		public void flush() {
			this.calls.add("flush");
		}

	}

}
