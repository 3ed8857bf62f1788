/*
 * FETCH_GEO: a GEO series by accession -> one .h5ad per sample + samplesheet.csv
 * (`bonemet fetch-geo`). Needs network access from the node that runs it.
 */
process FETCH_GEO {
    tag "${meta.id}"
    label 'process_single'
    maxForks 1

    input:
    val  meta          // [id: GSExxxxx, samples: 'GSM1,GSM2' or null]
    path config

    output:
    tuple val(meta), path("geo/samplesheet.csv"), emit: samplesheet
    path "geo/*.h5ad"                           , emit: h5ad
    path "geo/*.json"                           , emit: provenance, optional: true
    path "versions.yml"                         , emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args    = task.ext.args ?: ''
    def samples = meta.samples ? "--samples '${meta.samples}'" : ''
    """
    set +e
    bonemet fetch-geo ${meta.id} --out geo ${samples} --config ${config} ${args} 2> fetch_geo.err
    rc=\$?
    set -e
    cat fetch_geo.err >&2
    if [ \$rc -ne 0 ]; then
        if grep -q -E "invalid choice: 'fetch-geo'|NotImplementedError|has no attribute 'fetch_geo'|cannot import name 'fetch_geo'" fetch_geo.err; then
            echo "bonemet: error: --geo needs GEO support (bonemet fetch-geo), which this bonemet installation lacks: update bonemet, or download the series yourself and pass --input samplesheet.csv" >&2
        else
            echo "bonemet fetch-geo ${meta.id} failed (exit \$rc): see the message above; check the accession and the network, or pass --input samplesheet.csv" >&2
        fi
        exit \$rc
    fi
    test -s geo/samplesheet.csv || { echo "bonemet fetch-geo wrote no geo/samplesheet.csv" >&2; exit 1; }

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        bonemet: \$(bonemet --version 2>&1 | sed 's/^bonemet //')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p geo
    touch geo/GSM0000001.h5ad
    echo "sample,path,format" > geo/samplesheet.csv
    echo "GSM0000001,\$PWD/geo/GSM0000001.h5ad,h5ad" >> geo/samplesheet.csv
    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        bonemet: \$(python -c "from importlib.metadata import version; print(version('bonemet'))" 2>/dev/null || echo stub)
    END_VERSIONS
    """
}
