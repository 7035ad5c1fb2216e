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
 * an export without code; an entry without a type sets the policy of the export of the same
 * name defined as an {@code ExportBackend} bean. Policy keys (read-only, description, block
 * sizes, multi-conn, allowed addresses) apply to both alike; storage keys (type, size, path,
 * event-loop-io) only to exports made from properties.
 */
@ConfigurationProperties("nbd")
public class NbdExportProperties {

	/**
	 * Exports by name (the name clients ask for). An entry with a type makes an export from
	 * properties; an entry without one sets the policy of the ExportBackend bean of that name.
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
		 * Backend type: 'memory' or 'file'. Leave unset to set the policy of the export
		 * defined as an ExportBackend bean of this name.
		 */
		private Type type;

		/**
		 * Export size; required for 'memory'. For 'file', the file is extended (sparsely) to it,
		 * or its current size is used when unset.
		 */
		private DataSize size;

		/**
		 * Backing file of a 'file' export. A missing file is created sparse (its directory too,
		 * both logged) when a size is set and the export is writable.
		 */
		private Path path;

		/**
		 * Whether write-type commands are refused with NBD_EPERM and NBD_FLAG_READ_ONLY is
		 * advertised. OR-ed with the backend's own declaration: a bean that declares itself
		 * read-only stays read-only.
		 */
		private boolean readOnly;

		/**
		 * Sent as NBD_INFO_DESCRIPTION and in export lists; replaces the bean's own description.
		 */
		private String description;

		/**
		 * Smallest I/O unit (a power of two from 1B to 64KB): requests not aligned to it are
		 * refused with NBD_EINVAL. Replaces the bean's declaration; unset keeps it (1B for the
		 * built-in backends).
		 */
		private DataSize minimumBlockSize;

		/**
		 * Preferred I/O size advertised to clients (a power of two, at least 512B and at least
		 * the minimum block size, at most nbd.server.max-payload). Replaces the bean's
		 * declaration; unset keeps it (4KB for the built-in backends).
		 */
		private DataSize preferredBlockSize;

		/**
		 * Multi-connection policy: 'auto' advertises NBD_FLAG_CAN_MULTI_CONN when the backend
		 * declares it safe; 'emulate' advertises it and fans every flush out to all connections;
		 * 'single' refuses a second connection.
		 */
		private MultiConnMode multiConn = MultiConnMode.AUTO;

		/**
		 * Where a 'file' export's reads (pread, or sendfile for large reads without TLS) and
		 * plain writes run. Unset: on the network threads while the page cache answers them fast,
		 * on worker threads while calls are slow (cache misses, throttled writes), and back once
		 * they are fast again. 'true': always on the network threads (a slow call then stalls
		 * every connection on that thread); 'false': always on worker threads.
		 */
		private Boolean eventLoopIo;

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

		public DataSize getMinimumBlockSize() {
			return this.minimumBlockSize;
		}

		public void setMinimumBlockSize(DataSize minimumBlockSize) {
			this.minimumBlockSize = minimumBlockSize;
		}

		public DataSize getPreferredBlockSize() {
			return this.preferredBlockSize;
		}

		public void setPreferredBlockSize(DataSize preferredBlockSize) {
			this.preferredBlockSize = preferredBlockSize;
		}

		public Boolean getEventLoopIo() {
			return this.eventLoopIo;
		}

		public void setEventLoopIo(Boolean eventLoopIo) {
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
