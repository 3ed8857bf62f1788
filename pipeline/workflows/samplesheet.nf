/*
 * Samplesheet checks, run in Groovy when the workflow starts (nf-core style, no plugin):
 * a bad samplesheet stops the run before any task is submitted, with a message that names
 * the row. The rules are not written here: they are read from bonemet's samplesheet schema,
 * pipeline/bonemet/data/schema_input.json (nf-schema format), the file that
 * bonemet.io.read_samplesheet reads too, so both refuse the same sheets:
 *
 *   - the header has the schema's required columns (sample, path) and optional ones
 *   - a field with a "pattern" must match it (the sample id: it becomes a file name)
 *   - a field with an "enum" must be one of its values (case-insensitive; empty = default)
 *   - "uniqueEntries" columns are unique; a "path" with "exists" must exist (relative paths
 *     are read from the samplesheet's folder; remote URLs such as s3:// are staged by Nextflow)
 *   - .tsv and .txt sheets are tab-separated, others comma-separated
 *
 * Returns a list of [meta, path] with meta = [id, format, batch, condition, subject, tissue, species].
 * Unknown columns are ignored, with a warning unless warnUnknown is false (the samplesheets
 * that `bonemet simulate` and `bonemet fetch-geo` write carry extra descriptive columns).
 */

Map samplesheetSchema() {
    def f = file("${projectDir}/pipeline/bonemet/data/schema_input.json", checkIfExists: true)
    return new groovy.json.JsonSlurper().parseText(f.text) as Map
}

List parseSamplesheetLine(String line, String sep) {
    def fields = []
    def cur = new StringBuilder()
    boolean quoted = false
    int i = 0
    while (i < line.length()) {
        String c = line.substring(i, i + 1)
        if (quoted) {
            if (c == '"') {
                if (i + 1 < line.length() && line.substring(i + 1, i + 2) == '"') {
                    cur.append('"')
                    i++
                } else {
                    quoted = false
                }
            } else {
                cur.append(c)
            }
        } else if (c == '"') {
            quoted = true
        } else if (c == sep) {
            fields << cur.toString().trim()
            cur.setLength(0)
        } else {
            cur.append(c)
        }
        i++
    }
    fields << cur.toString().trim()
    return fields
}

List readSamplesheet(Object sheetArg, boolean warnUnknown = true) {
    def schema   = samplesheetSchema()
    def props    = schema.items.properties as Map
    def required = schema.items.required as List
    def optional = props.keySet().findAll { !(it in required) } as List
    def unique   = (schema.uniqueEntries ?: []) as List
    def columns  = (required + optional).join(',')

    def sheet = sheetArg instanceof java.nio.file.Path ? sheetArg : file(sheetArg.toString())
    def where = "Samplesheet ${sheetArg}"
    if (!sheet.exists()) {
        error("${where} does not exist: check --input (a CSV with columns ${columns})")
    }
    if (sheet.isDirectory()) {
        error("${where} is a folder: --input takes a samplesheet CSV with columns ${columns}")
    }
    def sep = sheet.name.toLowerCase() ==~ /.*\.(tsv|txt)$/ ? '\t' : ','
    def lines = sheet.readLines()
    if (lines && lines[0].startsWith('\uFEFF')) {
        lines[0] = lines[0].substring(1)
    }
    int headerIdx = lines.findIndexOf { it.trim() && !it.trim().startsWith('#') }
    if (headerIdx < 0) {
        error("${where} is empty: it needs a header line ${columns} and one row per sample")
    }
    def header = parseSamplesheetLine(lines[headerIdx], sep).collect { it.toLowerCase() }
    def missing = required.findAll { !(it in header) }
    if (missing) {
        error("${where}: the header (line ${headerIdx + 1}) lacks the required column(s) '${missing.join("', '")}': found '${header.join(sep)}', expected ${columns}")
    }
    def dupCols = header.findAll { col -> header.count(col) > 1 }.unique()
    if (dupCols) {
        error("${where}: the header (line ${headerIdx + 1}) repeats the column(s) '${dupCols.join("', '")}': name each column once")
    }
    def unknown = header.findAll { !(it in required + optional) }
    if (unknown && warnUnknown) {
        log.warn "${where}: ignoring unknown column(s) '${unknown.join("', '")}' (known: ${(required + optional).join(', ')})"
    }

    def rows = []
    def seen = unique.collectEntries { [(it): [:]] }
    int rowNo = 0
    for (int li = headerIdx + 1; li < lines.size(); li++) {
        def line = lines[li]
        if (!line.trim() || line.trim().startsWith('#')) {
            continue
        }
        rowNo++
        def row = "${where}, row ${rowNo} (line ${li + 1})"
        def fields = parseSamplesheetLine(line, sep)
        if (fields.size() != header.size()) {
            error("${row}: ${fields.size()} field(s) but the header has ${header.size()} (${header.join(sep)}): fix the row")
        }
        def r = [header, fields].transpose().collectEntries { [(it[0]): it[1]] }
        def id = r.sample
        required.each { col ->
            if (!r[col]) {
                error("${row}${id ? " (sample '${id}')" : ''}: the ${col} column is empty: fill it in on every row")
            }
        }
        props.each { col, rule ->
            def v = r[col]
            if (!v) {
                return
            }
            if (rule.pattern && !(v ==~ rule.pattern)) {
                error("${row}: ${col} '${v}' ${rule.errorMessage ?: 'is not allowed'}")
            }
            if (rule.enum && !(v.toLowerCase() in rule.enum)) {
                error("${row} (sample '${id}'): ${col} '${v}' is not one of ${rule.enum.join(', ')}")
            }
        }
        unique.each { col ->
            def v = r[col]
            if (seen[col].containsKey(v)) {
                error("${row}: duplicate ${col} '${v}' (already on row ${seen[col][v]}): ${col} values must be unique; merge the rows or rename one")
            }
            seen[col][v] = rowNo
        }
        def p = r.path
        def remote = p ==~ /^[A-Za-z][A-Za-z0-9+.-]*:\/\/.+/
        def data
        if (remote) {
            data = file(p)
        } else {
            def local = p.startsWith('~/') ? java.nio.file.Paths.get(System.getProperty('user.home'), p.substring(2)) : java.nio.file.Paths.get(p)
            data = (local.isAbsolute() ? local : sheet.toAbsolutePath().parent.resolve(local)).normalize()
            if (props.path?.exists && !data.exists()) {
                error("${row} (sample '${id}'): path '${p}' does not exist${local.isAbsolute() ? '' : " (relative paths are read from the samplesheet's folder: ${data})"}: fix the path")
            }
        }
        def value = { String col -> r[col] ? (props[col]?.enum ? r[col].toLowerCase() : r[col]) : (props[col]?.default ?: null) }
        def meta = [id: id, format: value('format') ?: 'auto', batch: value('batch'), condition: value('condition'), subject: value('subject'), tissue: value('tissue'), species: r.species ? r.species.toLowerCase() : null]
        rows << [meta, data]
    }
    if (!rows) {
        error("${where} has a header but no sample rows: add one row per sample")
    }
    return rows
}
