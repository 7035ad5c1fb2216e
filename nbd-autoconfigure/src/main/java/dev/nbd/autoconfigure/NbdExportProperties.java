package dev.nbd.autoconfigure;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.springframework.boot.context.properties.ConfigurationProperties;
import org.springframework.util.unit.DataSize;

import dev.nbd.server.MultiConnMode;

/**
 * Exports declared in configuration ({@code nbd.exports.<name>.*}). An entry with a type makes
 * an export without code; an entry without a type only sets options of the export of the same
 * name defined as an {@code ExportBackend} bean.
 */
@ConfigurationProperties("nbd")
public class NbdExportProperties {

	/**
	 * Exports by name.
	 */
	private Map<String, Export> exports = new LinkedHashMap<>();

	public Map<String, Export> getExports() {
		return this.exports;
	}

	public void setExports(Map<String, Export> exports) {
		this.exports = exports;
	}

	/**
	 * One export.
	 */
	public static class Export {

		/**
		 * Backend type; unset for options of an export defined as a bean.
		 */
		private Type type;

		/**
		 * Export size. For a file export, the file's current size when unset.
		 */
		private DataSize size;

		/**
		 * Backing file of a 'file' export; created sparse when missing.
		 */
		private Path path;

		/**
		 * Whether write-type commands are refused with NBD_EPERM (and not advertised).
		 */
		private boolean readOnly;

		/**
		 * Sent as NBD_INFO_DESCRIPTION and in export lists.
		 */
		private String description;

		/**
		 * Multi-connection policy: 'auto' advertises NBD_FLAG_CAN_MULTI_CONN when the backend
		 * declares it safe; 'emulate' advertises it and fans every flush out to all connections;
		 * 'single' refuses a second connection.
		 */
		private MultiConnMode multiConn = MultiConnMode.AUTO;

		/**
		 * Whether a 'file' export's reads (pread, or sendfile for large reads without TLS) and
		 * plain writes run on the network threads instead of worker threads. Faster while the
		 * data stays in the page cache; a cache miss or a throttled write then stalls every
		 * connection on that thread. Leave off for storage that may be slow.
		 */
		private boolean eventLoopIo;

		/**
		 * Comma-separated CIDR blocks allowed to use this export, on top of
		 * 'nbd.server.allowed-addresses'; empty allows all.
		 */
		private List<String> allowedAddresses = new ArrayList<>();

		public Type getType() {
			return this.type;
		}

		public void setType(Type type) {
			this.type = type;
		}

		public DataSize getSize() {
			return this.size;
		}

		public void setSize(DataSize size) {
			this.size = size;
		}

		public Path getPath() {
			return this.path;
		}

		public void setPath(Path path) {
			this.path = path;
		}

		public boolean isReadOnly() {
			return this.readOnly;
		}

		public void setReadOnly(boolean readOnly) {
			this.readOnly = readOnly;
		}

		public String getDescription() {
			return this.description;
		}

		public void setDescription(String description) {
			this.description = description;
		}

		public MultiConnMode getMultiConn() {
			return this.multiConn;
		}

		public void setMultiConn(MultiConnMode multiConn) {
			this.multiConn = multiConn;
		}

		public boolean isEventLoopIo() {
			return this.eventLoopIo;
		}

		public void setEventLoopIo(boolean eventLoopIo) {
			this.eventLoopIo = eventLoopIo;
		}

		public List<String> getAllowedAddresses() {
			return this.allowedAddresses;
		}

		public void setAllowedAddresses(List<String> allowedAddresses) {
			this.allowedAddresses = allowedAddresses;
		}

	}

	/**
	 * Built-in backend types.
	 */
	public enum Type {

		/**
		 * Sparse, off-heap, lost at exit.
		 */
		MEMORY,

		/**
		 * A file, created sparse when missing.
		 */
		FILE

	}

}
